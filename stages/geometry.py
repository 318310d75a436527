"""Tensor shapes of the network, derived from the model config."""
from __future__ import annotations

from dataclasses import dataclass


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    span = size + 2 * padding - kernel
    if span < 0:
        raise ValueError(f"kernel {kernel} does not fit input {size} with padding {padding}")
    return span // stride + 1


@dataclass(frozen=True)
class Geometry:
    """Per-image shapes (NHWC without N) of every tensor in the network."""

    height: int
    width: int
    channels: int
    filters: int
    kernel: int
    conv_stride: int
    padding: int
    pool_size: int
    pool_stride: int
    classes: int

    def check(self) -> None:
        """Raise ValueError naming the first layer whose window does not fit its input."""
        try:
            conv = self.conv
        except ValueError:
            raise ValueError(f"conv: a {self.kernel}x{self.kernel} kernel (model.kernel) does not fit the "
                             f"{self.height}x{self.width} input with padding {self.padding}") from None
        try:
            self.pool
        except ValueError:
            raise ValueError(f"pool: a {self.pool_size}x{self.pool_size} window (model.pool_size) does not fit "
                             f"the {conv[0]}x{conv[1]} output of the convolution") from None

    @property
    def image(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def conv(self) -> tuple[int, int, int]:
        return (
            conv_output_size(self.height, self.kernel, self.conv_stride, self.padding),
            conv_output_size(self.width, self.kernel, self.conv_stride, self.padding),
            self.filters,
        )

    @property
    def pool(self) -> tuple[int, int, int]:
        h, w, f = self.conv
        return (
            conv_output_size(h, self.pool_size, self.pool_stride, 0),
            conv_output_size(w, self.pool_size, self.pool_stride, 0),
            f,
        )

    @property
    def fc_inputs(self) -> int:
        h, w, f = self.pool
        return h * w * f

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "conv.w": (self.filters, self.channels, self.kernel, self.kernel),
            "conv.b": (self.filters,),
            "fc.w": (self.fc_inputs, self.classes),
            "fc.b": (self.classes,),
        }
