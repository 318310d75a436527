"""The `sparkcnn` command line's arguments: the parser and the config flags that become overrides."""
from __future__ import annotations

import argparse

from sparkcnn.pipeline import stage_keys


FLAG_KEYS = {
    "data": "data.path",
    "run_root": "run.root",
    "epochs": "train.epochs",
    "iterations": "run.iterations",
    "batch_size": "train.batch_size",
    "partitions": "spark.partitions",
    "seed": "train.seed",
    "mode": "run.mode",
    "inspect_every": "run.inspect_every",
}


def _add_config_flags(p: argparse.ArgumentParser, training: bool) -> None:
    p.add_argument("--config", help="TOML config file (default: conf/default.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.learning_rate=0.01")
    p.add_argument("--run-root", help="run root folder or URL (file://, hdfs://, ...)")
    if training:
        p.add_argument("--data", help="what to train on: a CIFAR-10 or CIFAR-100 python archive or folder, an image "
                       "folder (DIR/<class>/*.png|jpg) or a Parquet dataset; a path or URL (hdfs://...)")
        p.add_argument("--epochs", type=int)
        p.add_argument("--batch-size", type=int)
        p.add_argument("--seed", type=int)
    p.add_argument("--iterations", type=int, help="stop after N iterations")
    p.add_argument("--verbose", action="store_true", help="show Spark's own log and progress output")
    p.add_argument("--partitions", type=int)
    p.add_argument("--mode", choices=("staged", "memory", "fused"), help="execution mode (results do not change)")
    p.add_argument("--inspect-every", type=int, metavar="N", help="fused mode: write every N-th iteration's stage outputs")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="sparkcnn", description="Staged CNN training on Apache Spark.")
    sub = root.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train from a config, every layer a Spark stage")
    _add_config_flags(train, training=True)
    stage = sub.add_parser("stage", help="run one stage of a run")
    stage.add_argument("name", help=f"one of {', '.join((*stage_keys.SETUP_STAGES, 'batches', 'evaluate'))} or an "
                                    f"iteration stage of the network (`sparkcnn status` lists them: conv1_fwd, "
                                    f"relu1_fwd, ..., loss, ..., conv1_bwd, update)")
    stage.add_argument("--iteration", type=int, help="iteration of an iteration stage")
    stage.add_argument("--epoch", type=int, help="epoch of a batches or evaluate stage")
    _add_config_flags(stage, training=False)
    status = sub.add_parser("status", help="what is committed and what comes next")
    status.add_argument("--run-root")
    status.add_argument("--next", action="store_true", help="print only the next stage as `sparkcnn stage` arguments")
    status.add_argument("--verify", action="store_true", help="check every committed file against the manifest")
    resume = sub.add_parser("resume", help="continue a run from its first uncommitted stage")
    _add_config_flags(resume, training=False)
    resume.add_argument("--branch", metavar="NEW_ROOT",
                        help="with settings that change results: start a new run at NEW_ROOT from the last checkpoint")
    bench = sub.add_parser("bench", help="time one iteration in PyTorch, numpy and the three Spark modes")
    bench.add_argument("--config")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--data", help="a data source as train takes it (default: the embedded sample)")
    bench.add_argument("--images", type=int, default=2000, help="images per iteration (default 2000)")
    bench.add_argument("--scaling", default="500,2000,8000", help="batch sizes for the scaling table")
    bench.add_argument("--repeat", type=int, default=3, help="measured iterations after a warm-up (default 3)")
    bench.add_argument("--out", default="bench", help="folder for bench.json, bench.png and scratch runs (its runs/ folder is emptied first)")
    bench.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    bench.add_argument("--no-cache-policies", action="store_true", help="skip the table of cache policies")
    bench.add_argument("--epoch-images", default="5000,50000",
                       help="driver memory over one epoch of each size (sizes beyond the data are skipped)")
    bench.add_argument("--run-root", dest="hdfs_root", help="also time staged mode on this run root (e.g. hdfs://...)")
    bench.add_argument("--master", help="also time the Spark rows on this cluster (e.g. spark://host:7077)")
    sql = sub.add_parser("sql", help="query a run's tables with Spark SQL (no query: an interactive prompt)")
    sql.add_argument("query", nargs="?", help="a SQL query; without it, an interactive prompt opens")
    sql.add_argument("--run-root")
    sql.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table",
                     help="table (default; for reading: long arrays, floats and binary abbreviated), or csv, json "
                          "(one object per line) and parquet, which write every value in full")
    sql.add_argument("--out", help="write the result to this file (needed for parquet)")
    sql.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sql.add_argument("--views-sql", metavar="FILE", help="write CREATE VIEW statements for a plain spark-sql shell")
    sql.add_argument("--serve", action="store_true",
                     help="serve the views over JDBC/ODBC (Spark's Thrift server) until Ctrl-C or SIGTERM")
    sql.add_argument("--port", type=int, default=10000, help="--serve: the port (default 10000)")
    sql.add_argument("--host", default="127.0.0.1", help="--serve: the address to listen on (default 127.0.0.1; "
                                                         "any other needs a password)")
    sql.add_argument("--password-file", help="--serve: a file whose first line is the password every connection "
                                             "must give, any user name (default: $SPARKCNN_SQL_PASSWORD)")
    sql.add_argument("--tls-keystore", help="--serve: a Java keystore (JKS or PKCS12) to encrypt connections with "
                                            "(its password in $SPARKCNN_SQL_KEYSTORE_PASSWORD)")
    report = sub.add_parser("report", help="an HTML page with PNG charts made from the run's tables")
    report.add_argument("--run-root")
    report.add_argument("--out", required=True, help="folder for report.html and its charts")
    evaluate = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    predict = sub.add_parser("predict", help="classify PNG or JPEG files")
    score = sub.add_parser("score", help="score a data source as a Spark job: a Parquet table of predictions "
                                         "(the run's `scores` view)")
    score.add_argument("--data", help="a data source as train takes it (default: the run's own)")
    score.add_argument("--split", help="test, train or all (default: test of the run's own data and of sources with a "
                                       "split of their own, else all)")
    score.add_argument("--out", required=True, help="folder or URL for the Parquet table")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    for p in (evaluate, predict, score):
        p.add_argument("--run-root")
        p.add_argument("--checkpoint", help="an exported .npz (default: the run's parameters)")
        p.add_argument("--iteration", type=int, help="the run's parameters after N iterations (default: latest)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    gc = sub.add_parser("gc", help="apply retention and remove files no committed stage owns")
    gc.add_argument("--run-root")
    sweep = sub.add_parser("sweep", help="train every combination of --grid values as a trial sharing one ingest")
    _add_config_flags(sweep, training=True)
    sweep.add_argument("--grid", action="append", required=True, metavar="KEY=[V, ...]",
                       help="a train.* or model.* key and its values, e.g. 'train.learning_rate=[0.01, 0.02]'")
    sweep.add_argument("--parallel", type=int, default=1, help="trials trained at the same time (default 1)")
    export = sub.add_parser("export", help="write the trained network: parameters as named numpy arrays (.npz) or an "
                                           "ONNX graph (uint8 NHWC images in, class probabilities out)")
    export.add_argument("--run-root")
    export.add_argument("--out", required=True, help="the file to write, exactly as named")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.add_argument("--format", choices=("npz", "onnx"), default="npz", help="npz (default) or onnx")
    export.add_argument("--iteration", type=int, help="parameters after N iterations (default: the latest)")
    return root


def overrides_from(args) -> list[str]:
    flags = [f"{key}={toml_value(getattr(args, name))}" for name, key in FLAG_KEYS.items()
             if getattr(args, name, None) is not None]
    return [*args.overrides, *flags]


def toml_value(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)
