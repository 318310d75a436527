"""The `sparkcnn` command line."""
from __future__ import annotations

import os
import signal
import sys

from sparkcnn.pipeline import config
from sparkcnn.pipeline.cli.failures import EXPECTED, report_failure
from sparkcnn.pipeline.cli.model_commands import cmd_evaluate, cmd_export, cmd_predict, cmd_score
from sparkcnn.pipeline.cli.parser import overrides_from, parser, toml_value
from sparkcnn.pipeline.cli.query_commands import cmd_report, cmd_sql
from sparkcnn.pipeline.cli.training_commands import cmd_bench, cmd_gc, cmd_stage, cmd_status, cmd_sweep, cmd_train
from sparkcnn.pipeline.errors import LockHeld
from sparkcnn.pipeline.spark import session as spark_mod, signals
from sparkcnn.pipeline.training.run import Run

COMMANDS = {"train": cmd_train, "stage": cmd_stage, "status": cmd_status, "resume": cmd_train, "export": cmd_export,
            "gc": cmd_gc, "bench": cmd_bench, "sql": cmd_sql, "report": cmd_report, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "score": cmd_score, "sweep": cmd_sweep}


def train_config(args) -> config.Config:
    """The config `train` runs with: on an existing run root, the data it ingested unless data.path is named."""
    overrides = overrides_from(args)
    cfg = config.load(args.config, overrides)
    if not cfg.data.path and not any(o.startswith("data.path=") for o in overrides) and Run.exists(cfg.run.root):
        cfg = config.load(args.config, [*overrides, f"data.path={toml_value(Run.open(cfg.run.root).cfg.data.path)}"])
    return cfg


def default_root(args) -> str:
    return args.run_root or config.load(getattr(args, "config", None)).run.root


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


if __name__ == "__main__":
    sys.exit(main())
