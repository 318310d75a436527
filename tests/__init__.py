"""The test suite (imported before its conftest: the BLAS kernels are pinned before numpy loads)."""
import sparkcnn  # noqa: F401
