"""What a run root holds and how it changes: storage (local and HDFS), paths, the manifest, retention, verification, locks."""
