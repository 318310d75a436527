"""Everything that talks to Spark: the session, the JVM class archive, signals, tasks and jobs."""
