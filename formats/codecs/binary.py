"""Binary codec: one sign bit per weight and one scale per group.

Stored tensors:
    packed  uint8 (ceil(numel/8),)  bit 1 = +alpha (w >= 0, -0.0 included), 0 = -alpha; bitpack order
    scale   float16 (rows, groups)  alpha = mean |w| over the group's real elements
"""

from __future__ import annotations

import torch

from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..spec import BinarySpec
from .base import (
    TensorLayout,
    as_matrix,
    from_groups,
    group_sizes,
    matrix_shape,
    round_to_dtype,
    row_codes,
    scale_layout,
    to_groups,
)


def encode(weight: torch.Tensor, spec: BinarySpec) -> dict[str, torch.Tensor]:
    w = as_matrix(weight)
    alpha = to_groups(w, spec.group_size).abs().sum(dim=-1) / group_sizes(w.shape[1], spec.group_size, w.device)
    return {"packed": pack_bits((w >= 0).to(torch.int32), 1), "scale": round_to_dtype(alpha, spec.scale_dtype)}


def decode(tensors, spec: BinarySpec, shape) -> torch.Tensor:
    rows, cols = matrix_shape(shape)
    bits = unpack_bits(tensors["packed"], 1, rows * cols).view(rows, cols)
    return _values(bits, tensors["scale"], spec).reshape(shape)


def decode_rows(tensors, spec: BinarySpec, shape, rows: torch.Tensor) -> torch.Tensor:
    total, cols = matrix_shape(shape)
    return _values(row_codes(tensors["packed"], 1, total, cols, rows), tensors["scale"][rows], spec)


def _values(bits: torch.Tensor, scale: torch.Tensor, spec: BinarySpec) -> torch.Tensor:
    signs = bits.to(torch.float32) * 2 - 1
    alpha = scale.to(torch.float32).unsqueeze(-1)
    return from_groups(to_groups(signs, spec.group_size) * alpha, bits.shape[1])


def layout(shape, spec: BinarySpec) -> dict[str, TensorLayout]:
    rows, cols = matrix_shape(shape)
    return {
        "packed": TensorLayout((packed_nbytes(rows * cols, 1),), torch.uint8),
        "scale": scale_layout(shape, spec.group_size, spec.scale_dtype),
    }
