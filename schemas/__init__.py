"""Arrow/Parquet schemas of every table a run writes."""
