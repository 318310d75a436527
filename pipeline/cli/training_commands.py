"""The commands that train and keep a run root: train and resume, stage, status, gc, sweep, bench."""
from __future__ import annotations

import sys
from pathlib import Path

from sparkcnn.pipeline import config, stage_keys
from sparkcnn.pipeline.cli.failures import resume_command
from sparkcnn.pipeline.cli.parser import overrides_from, toml_value
from sparkcnn.pipeline.cli.progress import Progress
from sparkcnn.pipeline.errors import DamagedEntry
from sparkcnn.pipeline.runroot.lock import RunLock
from sparkcnn.pipeline.training.run import Run, RunError


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


def cmd_gc(args, run: Run) -> int:
    with RunLock(run.storage):
        done = run.collect_garbage()
    print(f"gc: removed {done['orphans']} file(s) no committed stage owns ({done['bytes'] / 1e6:.1f} MB); "
          f"retention applied (keep_iterations={run.cfg.run.keep_iterations}, "
          f"checkpoint_every={run.cfg.run.checkpoint_every})")
    return 0


def cmd_sweep(args, run) -> int:
    from sparkcnn.pipeline.ml.sweep import sweep
    from sparkcnn.pipeline.spark.session import session

    cfg = config.load(args.config, overrides_from(args))
    for s in sweep(cfg, args.grid, args.parallel, session(cfg, verbose=args.verbose)):
        accuracy = "-" if s["test_accuracy"] is None else f"{s['test_accuracy']:.4f}"
        print(f"{s['trial']}  {s['settings']}  {s['iterations']} iterations  test accuracy {accuracy}  {s['root']}")
    return 0


def cmd_bench(args, run) -> int:
    from sparkcnn.pipeline.bench import measure as bench

    cfg = config.load(args.config, [*args.overrides, *([f"data.path={toml_value(args.data)}"] if args.data else [])])
    scaling = [int(n) for n in args.scaling.split(",") if n.strip()]
    epochs = [int(n) for n in args.epoch_images.split(",") if n.strip()]
    bench.run_bench(cfg, args.images, scaling, args.repeat, Path(args.out), not args.no_torch, args.hdfs_root,
                    not args.no_cache_policies, epochs, args.master)
    return 0
