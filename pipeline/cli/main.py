"""The `sparkcnn` command line."""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.progress import Progress
from sparkcnn.pipeline.config import ConfigError
from sparkcnn.pipeline.data.ingest import DataError
from sparkcnn.pipeline.runroot import layout
from sparkcnn.pipeline.runroot.lock import LockHeld, RunLock
from sparkcnn.pipeline.runroot.manifest import DamagedEntry
from sparkcnn.pipeline.spark import session as spark_mod, signals
from sparkcnn.pipeline.training.run import Run, RunError, StageFailed, failure_reason

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
    flags = [f"{key}={_toml(getattr(args, name))}" for name, key in FLAG_KEYS.items()
             if getattr(args, name, None) is not None]
    return [*args.overrides, *flags]


def _toml(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def train_config(args) -> config.Config:
    """The config `train` runs with: on an existing run root, the data it ingested unless data.path is named."""
    overrides = overrides_from(args)
    cfg = config.load(args.config, overrides)
    if not cfg.data.path and not any(o.startswith("data.path=") for o in overrides) and Run.exists(cfg.run.root):
        cfg = config.load(args.config, [*overrides, f"data.path={_toml(Run.open(cfg.run.root).cfg.data.path)}"])
    return cfg


def default_root(args) -> str:
    return args.run_root or config.load(getattr(args, "config", None)).run.root


def resume_command(run: Run) -> str:
    return f"sparkcnn resume --run-root {shlex.quote(run.storage.url)}"


def print_stage(run: Run, outcome) -> None:
    line = f"{outcome.key:<24} {outcome.seconds:7.2f}s {outcome.rows:>7} rows {outcome.bytes / 1e6:9.1f} MB"
    stage, epoch, iteration = stage_keys.parse_key(outcome.key)
    values = run.manifest.get(outcome.key)["values"]
    if stage in ("loss", "evaluate"):
        parts = [values[p] for p in sorted(values)]
        count = sum(v["count"] for v in parts)
        line += f"  loss {sum(v['loss_sum'] for v in parts) / count:.4f}  accuracy {sum(v['correct'] for v in parts) / count:.4f}"
    print(line, flush=True)


def prepare(run: Run) -> None:
    """Before writing to an existing run: verify committed stages, uncommit what is damaged
    (with what depends on it), and remove files that dead attempts left behind."""
    if not run.manifest.keys():
        return
    problems = run.verify()
    for key, found in problems.items():
        print(f"verify: {key}: {'; '.join(found)}", flush=True)
    if problems:
        removed = run.repair(problems)
        print(f"verify: {len(removed)} stage(s) will be recomputed: {', '.join(removed[:12])}"
              f"{' ...' if len(removed) > 12 else ''}", flush=True)
    cleaned = run.collect_garbage()
    if cleaned["orphans"]:
        print(f"removed {cleaned['orphans']} uncommitted file(s) of dead attempts "
              f"({cleaned['bytes'] / 1e6:.1f} MB)", flush=True)


def cmd_train(args, run: Run) -> int:
    from sparkcnn.pipeline.spark.session import session

    for warning in [*run.cfg.warnings(), *run.data_notes()]:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    with RunLock(run.storage):
        run.save_config()
        print(f"run root {run.storage.url}", flush=True)
        prepare(run)
        progress = Progress(run)
        try:
            run.train(session(run.cfg, verbose=args.verbose), run.cfg.run.iterations,
                      on_stage=progress.after, before_stage=progress.before)
        finally:
            progress.close()
    report_status(run)
    if run.cfg.tracking.mlflow_uri:
        from sparkcnn.pipeline.ml import tracking

        tracking.tracker(run.cfg.tracking.mlflow_uri, run.storage.url).record(run, {})
    return 0


def stage_key(args, run: Run) -> str:
    name = args.name
    if name in run.network.iteration_stages:
        if args.iteration is None:
            raise RunError(f"stage {name} needs --iteration N")
        return stage_keys.iteration_key(args.iteration, name)
    if name in ("batches", "evaluate"):
        if args.epoch is None:
            raise RunError(f"stage {name} needs --epoch N")
        return stage_keys.batches_key(args.epoch) if name == "batches" else stage_keys.eval_key(args.epoch)
    if name in stage_keys.SETUP_STAGES:
        return name
    raise RunError(f"unknown stage {name!r}; this run's iteration stages: {', '.join(run.network.iteration_stages)}")


def cmd_stage(args, run: Run) -> int:
    from sparkcnn.pipeline.spark.session import session

    key = stage_key(args, run)
    if key not in run.plan():
        raise RunError(f"stage {key} is not part of this run's plan")
    with RunLock(run.storage):
        print_stage(run, run.run_stage(session(run.cfg, verbose=args.verbose), key))
    return 0


def cmd_bench(args, run) -> int:
    from sparkcnn.pipeline.bench import measure as bench

    cfg = config.load(args.config, [*args.overrides, *([f"data.path={_toml(args.data)}"] if args.data else [])])
    scaling = [int(n) for n in args.scaling.split(",") if n.strip()]
    epochs = [int(n) for n in args.epoch_images.split(",") if n.strip()]
    bench.run_bench(cfg, args.images, scaling, args.repeat, Path(args.out), not args.no_torch, args.hdfs_root,
                    not args.no_cache_policies, epochs, args.master)
    return 0


def cmd_sql(args, run: Run) -> int:
    from sparkcnn.pipeline.query import sql, sql_guard, sql_output
    from sparkcnn.pipeline.spark.session import session

    if args.views_sql:
        Path(args.views_sql).write_text(sql_output.views_sql(run, Path.cwd().as_uri()))
        print(f"wrote {args.views_sql}")
        return 0
    if args.serve:
        from sparkcnn.pipeline.query import sql_server

        if args.query:
            raise RunError("--serve takes no query: connect a JDBC client to the server and query there")
        secret = sql_server.password(args.host, args.password_file)
        keystore_secret = sql_server.keystore_password(args.tls_keystore)
        sql_server.check_port(args.host, args.port)
        spark = session(run.cfg, conf=sql_server.settings(), querying=True)
        return sql_server.serve(spark, sql.RunViews(spark, run, shared=True), args.host, args.port, secret,
                                args.tls_keystore, keystore_secret, on_ready=lambda line: print(line, flush=True))
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise RunError(f"{args.out} exists; add --overwrite to replace it")
    spark = session(run.cfg, conf=sql_guard.SESSION, querying=True)
    views = sql.RunViews(spark, run)
    if args.query is None:
        return sql_prompt(spark, run, views)
    for note in views.prepare(args.query):
        print(note, file=sys.stderr)
    try:
        result = spark.sql(args.query).toArrow()
    except Exception as e:
        print(f"error: {sql.sql_error(e)}", file=sys.stderr)
        return 2
    return write_result(args, result)


def write_result(args, result) -> int:
    """A query's result on stdout or in --out."""
    from sparkcnn.pipeline.query import sql_output

    if args.format == "parquet":
        if not args.out:
            raise RunError("--format parquet needs --out FILE")
        import pyarrow.parquet as pq

        pq.write_table(result, args.out)
        print(f"wrote {args.out}: {result.num_rows} rows")
        return 0
    text = sql_output.aligned(result) + "\n" if args.format == "table" else sql_output.render(result, args.format)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: {result.num_rows} rows")
    else:
        sys.stdout.write(text)
    return 0


def sql_prompt(spark, run: Run, views) -> int:
    """An interactive prompt: statements end with ';', history is kept in ~/.sparkcnn_sql_history."""
    from sparkcnn.pipeline.query import sql_output
    from sparkcnn.pipeline.query.sql import sql_error

    history = Path.home() / ".sparkcnn_sql_history"
    try:
        import readline

        if history.exists():
            readline.read_history_file(history)
    except (ImportError, OSError):
        readline = None
    print(f"run {run.storage.url}; views: {', '.join(views.names())}")
    print("end statements with ';', leave with \\q; Ctrl-C drops the statement (or stops the query) under way")
    buffer: list[str] = []
    while True:
        try:
            line = input("sparkcnn> " if not buffer else "      ...> ")
        except EOFError:
            break
        except (signals.Interrupted, KeyboardInterrupt):
            print()
            buffer = []
            signals.clear()
            continue
        if not buffer and line.strip().lower() in ("\\q", "quit", "exit", "quit;", "exit;"):
            break
        buffer.append(line)
        if line.rstrip().endswith(";"):
            query = "\n".join(buffer).rstrip().rstrip(";")
            buffer = []
            try:
                for note in views.prepare(query):
                    print(note)
                print(sql_output.aligned(spark.sql(query).toArrow()))
            except (Exception, signals.Interrupted) as e:
                if ended := spark_mod.jvm_ended(e):
                    print(f"error: {ended}; the prompt cannot go on")
                    return 1
                print("query stopped" if signals.settle() else f"error: {sql_error(e)}")
                signals.clear()
    if readline is not None:
        readline.write_history_file(history)
    return 0


def cmd_sweep(args, run) -> int:
    from sparkcnn.pipeline.ml.sweep import sweep
    from sparkcnn.pipeline.spark.session import session

    cfg = config.load(args.config, overrides_from(args))
    for s in sweep(cfg, args.grid, args.parallel, session(cfg, verbose=args.verbose)):
        accuracy = "-" if s["test_accuracy"] is None else f"{s['test_accuracy']:.4f}"
        print(f"{s['trial']}  {s['settings']}  {s['iterations']} iterations  test accuracy {accuracy}  {s['root']}")
    return 0


def cmd_report(args, run: Run) -> int:
    from sparkcnn.pipeline.query.report import write_report

    if run.storage.exists("trials") and not run.manifest.committed("init"):
        from sparkcnn.pipeline.ml.sweep import compare

        compare(run.storage.url, Path(args.out))
        print(f"wrote {Path(args.out) / 'report.html'} comparing the trials of {run.storage.url}")
        return 0
    figures = write_report(run, Path(args.out))
    accuracy = figures["curves"]["test_accuracy"]
    print(f"wrote {Path(args.out) / 'report.html'} and its charts"
          + (f"; last test accuracy {accuracy[max(accuracy)]:.4f}" if accuracy else ""))
    return 0


def cmd_evaluate(args, run: Run) -> int:
    from sparkcnn.pipeline.deploy.predict import evaluate, load_checkpoint

    source, params = load_checkpoint(run, args.checkpoint, args.iteration)
    result = evaluate(run, params)
    print(f"{source}: test accuracy {result['accuracy']:.4f} on {result['images']} images")
    return 0


def cmd_predict(args, run: Run) -> int:
    from sparkcnn.pipeline.deploy.predict import load_checkpoint, load_image, predict_arrays

    _, params = load_checkpoint(run, args.checkpoint, args.iteration)
    names = run.class_names()
    readable, images = [], []
    for path in args.images:
        try:
            images.append(load_image(path, run.network.image))
            readable.append(path)
        except RunError as e:
            print(f"error: {e}", file=sys.stderr)
    if images:
        for path, probs in zip(readable, predict_arrays(run, params, np.stack(images))):
            best = int(probs.argmax())
            print(f"{path}: {names[best]} {probs[best]:.4f}")
    failed = len(args.images) - len(readable)
    if failed:
        print(f"error: {failed} of {len(args.images)} image(s) could not be read", file=sys.stderr)
        return 2
    return 0


def cmd_score(args, run: Run) -> int:
    from sparkcnn.pipeline.cli.progress import TaskProgress
    from sparkcnn.pipeline.deploy.predict import load_checkpoint
    from sparkcnn.pipeline.deploy.score import score
    from sparkcnn.pipeline.spark.session import session

    described, params = load_checkpoint(run, args.checkpoint, args.iteration)
    data = args.data or run.manifest.get("ingest")["values"][stage_keys.ALL_PARTS]["source"]
    spark = session(run.cfg)
    summary = score(run, spark, params, described, data, args.split, args.out, args.overwrite,
                    TaskProgress(spark, "scoring"))
    accuracy = (f"; accuracy {summary['correct'] / summary['labelled']:.4f} on {summary['labelled']} labelled images"
                if summary["labelled"] else "; no labels comparable with the run's classes")
    skipped = [f"{n} {what}" for n, what in ((summary["other_split"], f"outside split {summary['split']}"),
                                             (summary["unreadable"], "unreadable")) if n]
    print(f"scored {summary['images']} images of {summary['data']} (split {summary['split']}"
          f"{'; skipped ' + ', '.join(skipped) if skipped else ''}) with {described} into {summary['out']}{accuracy}; "
          f"query them as the view `scores` (sparkcnn sql)")
    if summary["unreadable"]:
        named = "; ".join(summary["unreadable_named"])
        print(f"error: {summary['unreadable']} image(s) could not be read and were not scored: {named}", file=sys.stderr)
        return 2
    return 0


def cmd_gc(args, run: Run) -> int:
    with RunLock(run.storage):
        done = run.collect_garbage()
    print(f"gc: removed {done['orphans']} file(s) no committed stage owns ({done['bytes'] / 1e6:.1f} MB); "
          f"retention applied (keep_iterations={run.cfg.run.keep_iterations}, "
          f"checkpoint_every={run.cfg.run.checkpoint_every})")
    return 0


def report_status(run: Run) -> None:
    print(f"run root {run.storage.url} (mode {run.cfg.run.mode})")
    print(f"network: {'x'.join(map(str, run.network.image))} -> {run.network.describe()}")
    print(f"stages of an iteration: {' '.join(run.network.iteration_stages)}")
    if run.manifest.committed("ingest"):
        sched = run.schedule()
        print(f"iterations done {run.iterations_done()} of {sched.total_iterations} "
              f"({sched.epochs} epochs of {sched.iterations_per_epoch})")
    metrics = run.metrics().to_pylist()
    train = sorted((m for m in metrics if m["kind"] == "train"), key=lambda m: m["iteration"])
    if train:
        last = train[-1]
        print(f"last train loss {last['loss']:.4f} (iteration {last['iteration']})")
    for m in sorted((m for m in metrics if m["kind"] == "eval"), key=lambda m: m["epoch"]):
        print(f"epoch {m['epoch'] + 1}: test loss {m['loss']:.4f}, test accuracy {m['accuracy']:.4f}")
    nxt = run.next_stage()
    print(f"next stage: {nxt}" if nxt else "complete: every planned stage is committed")


def stage_arguments(key: str) -> str:
    """A stage key as `sparkcnn stage` arguments, e.g. i000003.relu1_fwd -> relu1_fwd --iteration 3."""
    stage, epoch, iteration = stage_keys.parse_key(key)
    if iteration is not None:
        return f"{stage} --iteration {iteration}"
    return f"{stage} --epoch {epoch}" if epoch is not None else stage


def cmd_status(args, run: Run) -> int:
    if args.next:
        nxt = run.next_stage()
        print(stage_arguments(nxt) if nxt else "")
        return 0
    try:
        report_status(run)
    except DamagedEntry:
        if not args.verify:
            raise
    if not args.verify:
        return 0
    problems = run.verify()
    for key, found in problems.items():
        print(f"verify: {key}: {'; '.join(found)}")
    print(f"verify: {len(run.manifest.keys())} committed stage(s) checked, {len(problems)} damaged"
          + (f"; `{resume_command(run)}` recomputes them" if problems else ""))
    return 1 if problems else 0


def cmd_export(args, run: Run) -> int:
    iteration, params = run.latest_params(args.iteration)
    if os.path.lexists(args.out) and not args.overwrite:
        raise RunError(f"{args.out} exists; pass --overwrite to replace it")
    if args.format == "onnx":
        from sparkcnn.pipeline.deploy.onnx_export import INPUT, OUTPUT, build

        mean, std = run.channel_stats()
        model = build(run.network, params, mean, std, run.class_names(),
                      f"{run.storage.url} after {iteration} iterations")
        Path(args.out).write_bytes(model.SerializeToString())
        h, w, c = run.network.image
        print(f"wrote {args.out}: ONNX graph after {iteration} iterations; input {INPUT} uint8 (N, {h}, {w}, {c}), "
              f"output {OUTPUT} float32 (N, {run.network.classes})")
        return 0
    with open(args.out, "wb") as out:  # the name as given (np.savez would add .npz to a name)
        np.savez(out, **params)
    print(f"wrote {args.out}: parameters after {iteration} iterations ({', '.join(sorted(params))})")
    return 0


COMMANDS = {"train": cmd_train, "stage": cmd_stage, "status": cmd_status, "resume": cmd_train, "export": cmd_export,
            "gc": cmd_gc, "bench": cmd_bench, "sql": cmd_sql, "report": cmd_report, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "score": cmd_score, "sweep": cmd_sweep}
WRITERS = ("train", "resume", "stage")
EXPECTED = (ConfigError, DataError, RunError)


def open_run(args) -> Run | None:
    if args.command in ("bench", "sweep"):
        return None
    if args.command == "train":
        return Run(train_config(args))
    root = default_root(args)
    if args.command == "stage" and not Run.exists(root):
        run = Run(config.load(args.config, overrides_from(args)), root)
        run.save_config()
        return run
    extra = [o for o in (overrides_from(args) if hasattr(args, "overrides") else []) if not o.startswith("run.root=")]
    if args.command == "resume" and args.config and not Run.exists(root):
        return Run(config.load(args.config, extra), root)
    run = Run.open(root, extra)
    if args.command == "resume" and args.branch:
        source = Run.open(root)
        run = source.branch_to(run.cfg, args.branch)
        print(f"branched {source.storage.url} at iteration {run.schedule().start_iteration} into {run.storage.url}")
    return run


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    spark_mod.set_verbose(getattr(args, "verbose", False))
    signals.install()
    existing = spark_mod.active_context()
    run = None
    try:
        run = open_run(args)
        return COMMANDS[args.command](args, run)
    except LockHeld as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # the reader of our output went away (`| head`): not a failure of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (Exception, signals.Interrupted, KeyboardInterrupt) as e:
        e = signals.settle() or (signals.Interrupted(signal.SIGINT) if isinstance(e, KeyboardInterrupt) else e)
        if not isinstance(e, (signals.Interrupted, *EXPECTED)) and os.environ.get("SPARKCNN_DEBUG"):
            raise
        return report_failure(args, run, e)
    finally:
        if spark_mod.active_context() is not existing:
            spark_mod.stop()


def report_failure(args, run: Run | None, error: BaseException) -> int:
    """One clean error on the console, the full trace in a log file under the run root that it names,
    and the resume command where resuming can help. Returns the exit code."""
    interrupted = isinstance(error, signals.Interrupted)
    expected = isinstance(error, EXPECTED)
    if interrupted:
        stage = f" during stage {run.running} (not committed)" if run is not None and run.running else ""
        reason = f"{error}{stage}"
    else:
        reason = str(error) if expected else (spark_mod.jvm_ended(error) or failure_reason(error))
    print(f"error: {reason}", file=sys.stderr)
    known = run is not None and _holds_run(run)
    if not interrupted and not (expected and not isinstance(error, StageFailed)):
        print(f"details: {write_failure_log(args, run if known else None, error)}", file=sys.stderr)
    if known and args.command in WRITERS:
        print(f"run root: {run.storage.where('')}", file=sys.stderr)
        if interrupted or getattr(error, "resumable", not expected):
            print(f"to continue: {resume_command(run)}", file=sys.stderr)
    if interrupted:
        return error.exit_code
    return 2 if expected else 1


def _holds_run(run: Run) -> bool:
    try:
        return Run.exists(run.storage.url)
    except Exception:
        return False


def write_failure_log(args, run: Run | None, error: BaseException) -> str:
    """Write the full trace (and what Spark's JVM printed) to logs/ under the run root, or to a
    temporary file when there is no usable run root; returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = layout.log_file(stamp, os.getpid(), args.command)
    text = "".join([f"sparkcnn {' '.join(map(shlex.quote, sys.argv[1:]))}\n\n",
                    *traceback.format_exception(type(error), error, error.__traceback__)])
    jvm = spark_mod.jvm_log_tail()
    if jvm:
        text += f"\n--- Spark's own output ---\n{jvm}"
    if run is not None:
        try:
            run.storage.write_bytes(path, text.encode())
            return run.storage.where(path)
        except Exception:
            pass
    fallback = Path(tempfile.gettempdir()) / f"sparkcnn-{path.rsplit('/', 1)[-1]}"
    fallback.write_text(text)
    return str(fallback)


if __name__ == "__main__":
    sys.exit(main())
