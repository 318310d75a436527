"""sparkcnn as a Spark ML citizen: an Estimator and Model over DataFrames, trials that share one ingest,
sweeps from the command line and MLflow tracking (public names in sparkcnn.ml)."""
