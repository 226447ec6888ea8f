"""Binary codec: one sign bit per weight and one scale per group.

Stored tensors:
    packed  uint8 (ceil(numel/8),)  bit 1 = +alpha (w >= 0, -0.0 included), 0 = -alpha; bitpack order
    scale   float16 (rows, groups)  alpha = mean |w| over the group's real elements
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..bitpack import pack_bits, packed_nbytes, unpack_table
from .base import (
    Codec,
    FakeOptions,
    FloatDType,
    GroupFake,
    IntGrid,
    SpecBase,
    TensorLayout,
    as_matrix,
    grid_bounds,
    group_count,
    group_sizes,
    group_text,
    matrix_shape,
    register,
    round_to_dtype,
    row_codes,
    scale_groups_,
    scale_layout,
    side_bits,
    to_groups,
)


class BinarySpec(SpecBase):
    """Sign bits and one scale per group: w ~ alpha * sign(w), alpha = mean |w| of the group;
    w >= 0 (including -0.0) maps to +alpha."""

    codec: Literal["binary"] = "binary"
    group_size: int | None = Field(default=128, ge=1)
    scale_dtype: FloatDType = "float16"

    def describe(self) -> str:
        return f"binary {group_text(self.group_size)}"


def _alpha(groups: torch.Tensor, sizes: torch.Tensor, spec: BinarySpec) -> torch.Tensor:
    """alpha per group, rounded to its storage dtype: the one rule encode and the training fake share."""
    return round_to_dtype(groups.abs().sum(dim=-1) / sizes, spec.scale_dtype)


_SIGNS = torch.tensor([-1.0, 1.0])  # stored bit -> sign, float32


def _values(signs: torch.Tensor, scale: torch.Tensor, spec: BinarySpec) -> torch.Tensor:
    """(rows, cols) float32 signs (a fresh tensor: scaled in place) times each group's alpha."""
    return scale_groups_(signs, scale, spec.group_size)


@register
class Binary(Codec):
    spec = BinarySpec

    def encode(self, weight, spec: BinarySpec, scale=None) -> dict[str, torch.Tensor]:
        w = as_matrix(weight)
        alpha = _alpha(to_groups(w, spec.group_size), group_sizes(w.shape[1], spec.group_size, w.device), spec)
        return {"packed": pack_bits((w >= 0).to(torch.int32), 1), "scale": alpha}

    def decode(self, tensors, spec: BinarySpec, shape) -> torch.Tensor:
        rows, cols = matrix_shape(shape)
        signs = unpack_table(tensors["packed"], 1, rows * cols, _SIGNS).view(rows, cols)
        return _values(signs, tensors["scale"], spec).reshape(shape)

    def decode_rows(self, tensors, spec: BinarySpec, shape, rows: torch.Tensor) -> torch.Tensor:
        total, cols = matrix_shape(shape)
        bits = row_codes(tensors["packed"], 1, total, cols, rows)
        return _values(_SIGNS.to(bits.device)[bits], tensors["scale"][rows], spec)

    def layout(self, shape, spec: BinarySpec) -> dict[str, TensorLayout]:
        rows, cols = matrix_shape(shape)
        return {
            "packed": TensorLayout((packed_nbytes(rows * cols, 1),), torch.uint8),
            "scale": scale_layout(shape, spec.group_size, spec.scale_dtype),
        }

    def row_unit(self, spec: BinarySpec) -> int:
        return 8  # a block of rows ends its bit stream on a byte

    def value_bits(self, spec: BinarySpec) -> float:
        return 1.0

    def tags(self, spec: BinarySpec) -> list[str]:
        return ["binary"]

    def information_bits(self, shape, spec: BinarySpec) -> float:
        rows, cols = matrix_shape(shape)
        return rows * cols + side_bits(self.layout(shape, spec))

    def int_grid(self, tensors, spec: BinarySpec, rows: int, cols: int) -> IntGrid:
        q = unpack_table(tensors["packed"], 1, rows * cols, _SIGNS.to(torch.int8)).view(rows, cols)
        g, _ = group_count(cols, spec.group_size)
        return IntGrid(q=q.to(torch.int8), scale=tensors["scale"].to(torch.float32), bounds=grid_bounds(cols, g))

    def fake(self, spec: BinarySpec, weight, options: FakeOptions) -> GroupFake:
        """Forward: exactly the stored signs times alpha; the latent weight keeps its gradient (straight through),
        so it may cross zero and change sign at any step: BS-Flex's reassignment, unlike k-means'."""
        return GroupFake(spec, lambda x, sizes: torch.where(x >= 0, 1.0, -1.0) * _alpha(x, sizes, spec).unsqueeze(-1))
