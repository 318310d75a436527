"""The arithmetic a run computes with: one BLAS kernel family on every machine.

numpy's OpenBLAS picks its matrix-product kernels by the CPU it finds (SkylakeX kernels on an AVX-512 Xeon,
Haswell kernels on an AMD EPYC), and the kernels sum in different orders: the same config and seed gave other
bits on each. `pin` makes every process the project starts use the Haswell kernels, which every x86-64 CPU
with AVX2 runs; it must run before numpy loads, and the processes the project starts inherit it (Spark's
Python workers through the driver's environment and `spark.executorEnv`). `arithmetic()` names what this
process computes with; a stage's identity includes it when it is not `PINNED`, and a task whose worker
computes otherwise than its driver fails, naming both, rather than mixing kernels in one run.
(numpy's own SIMD dispatch was checked to give the same bits for exp, log, tanh, sums and maxima on AVX2
and AVX-512, so it is left alone.)"""
from __future__ import annotations

import functools
import os
import platform

from sparkcnn.pipeline.errors import ArithmeticMismatch

CORETYPE_VAR = "OPENBLAS_CORETYPE"
PINNED_CORETYPE = "Haswell"
PINNED = f"openblas {PINNED_CORETYPE}"
DRIVER_VAR = "SPARKCNN_ARITHMETIC"


def _has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def pin(environ=os.environ) -> None:
    """Ask OpenBLAS for the pinned kernel family (unless the environment already names one, or the CPU
    cannot run it: its arithmetic then differs from `PINNED`, and identities say so)."""
    if _has_avx2():
        environ.setdefault(CORETYPE_VAR, PINNED_CORETYPE)


def executor_env() -> dict[str, str]:
    """Spark settings that give executors the driver's kernel family and name the driver's arithmetic."""
    env = {DRIVER_VAR: arithmetic()}
    if CORETYPE_VAR in os.environ:
        env[CORETYPE_VAR] = os.environ[CORETYPE_VAR]
    return {f"spark.executorEnv.{k}": v for k, v in env.items()}


@functools.lru_cache(maxsize=1)
def arithmetic() -> str:
    """The BLAS library numpy uses and its kernel family, e.g. 'openblas Haswell'."""
    import numpy  # noqa: F401  (threadpoolctl sees only loaded libraries)
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        return "unknown"
    info = blas[0]
    return " ".join(str(v) for v in (info.get("internal_api"), info.get("architecture") or info.get("version")) if v)


def identity_extra() -> dict:
    """What a stage's identity adds for the arithmetic: nothing for the pinned one (so identities made
    before this was recorded stay valid), its name otherwise."""
    current = arithmetic()
    return {} if current == PINNED else {"arithmetic": current}


def check_worker() -> None:
    """In a task: refuse to compute when this worker's kernels are not its driver's."""
    expected = os.environ.get(DRIVER_VAR)
    if expected is not None and expected != arithmetic():
        raise ArithmeticMismatch(f"this worker computes with {arithmetic()} kernels, the driver with {expected}: "
                                 f"results would differ by machine; set {CORETYPE_VAR} alike on every machine")


def check_run(recorded: str, root: str) -> None:
    """Refuse to continue a run whose committed stages were computed with other kernels."""
    if recorded != arithmetic():
        raise ArithmeticMismatch(f"run root {root} was computed with {recorded} kernels and this machine computes "
                                 f"with {arithmetic()}: continuing would mix them; resume where {CORETYPE_VAR} "
                                 f"gives {recorded}, or use --branch NEW_ROOT to continue with these kernels")
