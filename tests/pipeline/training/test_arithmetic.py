"""The same bits on every machine: one BLAS kernel family pinned for every process, recorded where it
is not the pinned one, and a run or a task that would mix kernel families refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sparkcnn.pipeline import numerics
from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.errors import ArithmeticMismatch
from sparkcnn.pipeline.spark.session import spark_settings

PROBE = ("import json, sparkcnn, numpy as np; from sparkcnn.pipeline import numerics; "
         "a = np.random.default_rng(0).standard_normal((300, 300), dtype=np.float32); "
         "import hashlib; print(json.dumps([numerics.arithmetic(), hashlib.sha256((a @ a).tobytes()).hexdigest()]))")


def probe(**env) -> tuple[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != numerics.CORETYPE_VAR} | env
    done = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, check=True)
    return tuple(json.loads(done.stdout))


def avx512() -> bool:
    with open("/proc/cpuinfo") as f:
        return " avx512f" in f.read()


def test_a_process_that_imports_sparkcnn_computes_with_the_pinned_kernels():
    assert numerics.arithmetic() == numerics.PINNED
    pinned = probe()
    assert pinned == probe(OPENBLAS_CORETYPE=numerics.PINNED_CORETYPE)
    assert pinned[0] == numerics.PINNED


@pytest.mark.skipif(not avx512(), reason="only a CPU with AVX-512 offers OpenBLAS's SkylakeX kernels")
def test_the_cpus_own_kernels_would_give_other_bits_and_are_named():
    arithmetic, digest = probe(OPENBLAS_CORETYPE="SkylakeX")
    assert arithmetic == "openblas SkylakeX" and digest != probe()[1]


def test_stage_identities_name_the_arithmetic_only_when_it_is_not_the_pinned_one(monkeypatch):
    assert numerics.identity_extra() == {}
    monkeypatch.setattr(numerics, "arithmetic", lambda: "openblas SkylakeX")
    assert numerics.identity_extra() == {"arithmetic": "openblas SkylakeX"}


def test_a_run_computed_with_other_kernels_is_refused_naming_both():
    numerics.check_run(numerics.PINNED, "runs/r")
    with pytest.raises(ArithmeticMismatch, match=r"runs/r was computed with openblas SkylakeX kernels .* "
                                                 r"computes with openblas Haswell"):
        numerics.check_run("openblas SkylakeX", "runs/r")


def test_a_worker_with_other_kernels_than_its_driver_refuses_to_compute(monkeypatch):
    monkeypatch.setenv(numerics.DRIVER_VAR, numerics.PINNED)
    numerics.check_worker()
    monkeypatch.setenv(numerics.DRIVER_VAR, "openblas SkylakeX")
    with pytest.raises(ArithmeticMismatch, match="the driver with openblas SkylakeX"):
        numerics.check_worker()


def test_executors_get_the_drivers_kernel_family_and_its_name():
    settings = spark_settings(Config(), "t", False, None, False)
    assert settings["spark.executorEnv.OPENBLAS_CORETYPE"] == numerics.PINNED_CORETYPE
    assert settings[f"spark.executorEnv.{numerics.DRIVER_VAR}"] == numerics.PINNED


@pytest.mark.slow
def test_training_on_with_other_kernels_is_refused_naming_both(spark, tmp_path):
    from sparkcnn.pipeline import config
    from sparkcnn.pipeline.training.run import Run

    root = tmp_path / "run"
    run = Run(config.load(overrides=["train.images=100", "train.batch_size=50", "train.shard_size=50",
                                     f'run.root="{root}"']))
    run.save_config()
    run.train(spark, 1)
    assert run.manifest.get("init")["arithmetic"] == numerics.PINNED
    env = {**os.environ, numerics.CORETYPE_VAR: "Sandybridge"}  # a family every x86-64 CPU with AVX runs
    done = subprocess.run([sys.executable, "-m", "sparkcnn", "train", "--run-root", str(root)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert (f"run root {root} was computed with openblas Haswell kernels and this machine computes with openblas "
            f"Sandybridge") in done.stderr and "Traceback" not in done.stderr
    assert run.iterations_done() == 1
