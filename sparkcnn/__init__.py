"""sparkcnn: convolutional-network training on Apache Spark as a staged data pipeline.

The repository's folders install under this one name: `sparkcnn.pipeline` (orchestration),
`sparkcnn.stages` (the layers' numpy math and table adapters) and `sparkcnn.schemas` (the network and
the tables). The public entry points are importable from here.
"""
import sparkcnn.pipeline  # noqa: F401  (pins the BLAS kernels before numpy loads)

__all__ = ["open_run"]


def __getattr__(name: str):
    if name == "open_run":
        from sparkcnn.pipeline.query.api import open_run

        return open_run
    raise AttributeError(f"module 'sparkcnn' has no attribute {name!r}")
