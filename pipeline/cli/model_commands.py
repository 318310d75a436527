"""The commands that use the trained network: export, evaluate, predict, score."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from sparkcnn.pipeline import stage_keys
from sparkcnn.pipeline.training.run import Run, RunError


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
