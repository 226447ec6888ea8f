"""Ternary codec: w ~ alpha * t with t in {-1, 0, +1}, trits packed five to a byte.

Stored tensors:
    packed  uint8 (ceil(numel/5),)  trit t+1 (0: -alpha, 1: zero, 2: +alpha); order of `bitpack.pack_trits`
    scale   float16 (rows, groups)  alpha per group

Per group (real elements only): delta = threshold * mean|w|; t = +1 where w > delta, -1 where
w < -delta, else 0; alpha = mean |w| over the nonzero t (0 when there are none). Zero stays zero.
"""

from __future__ import annotations

import torch

from ..bitpack import pack_trits, trit_nbytes, unpack_trits, unpack_trits_at
from ..spec import TernarySpec
from .base import (
    TensorLayout,
    as_matrix,
    from_groups,
    group_sizes,
    matrix_shape,
    round_to_dtype,
    row_positions,
    scale_layout,
    to_groups,
)


def encode(weight: torch.Tensor, spec: TernarySpec) -> dict[str, torch.Tensor]:
    w = as_matrix(weight)
    x = to_groups(w, spec.group_size)
    mag = x.abs()
    delta = (spec.threshold * mag.sum(dim=-1) / group_sizes(w.shape[1], spec.group_size, w.device)).unsqueeze(-1)
    t = (x > delta).to(torch.int32) - (x < -delta).to(torch.int32)
    kept = t != 0
    alpha = (mag * kept).sum(dim=-1) / kept.sum(dim=-1).clamp(min=1)
    return {"packed": pack_trits(from_groups(t + 1, w.shape[1])), "scale": round_to_dtype(alpha, spec.scale_dtype)}


def decode(tensors, spec: TernarySpec, shape) -> torch.Tensor:
    rows, cols = matrix_shape(shape)
    trits = unpack_trits(tensors["packed"], rows * cols).view(rows, cols)
    return _values(trits, tensors["scale"], spec).reshape(shape)


def decode_rows(tensors, spec: TernarySpec, shape, rows: torch.Tensor) -> torch.Tensor:
    """Only the trits of the given rows (a row seldom starts on a byte: 5 trits share each one)."""
    _, cols = matrix_shape(shape)
    trits = unpack_trits_at(tensors["packed"], row_positions(rows, cols))
    return _values(trits, tensors["scale"][rows], spec)


def _values(trits: torch.Tensor, scale: torch.Tensor, spec: TernarySpec) -> torch.Tensor:
    t = trits.to(torch.float32) - 1
    alpha = scale.to(torch.float32).unsqueeze(-1)
    return from_groups(to_groups(t, spec.group_size) * alpha, trits.shape[1])


def layout(shape, spec: TernarySpec) -> dict[str, TensorLayout]:
    rows, cols = matrix_shape(shape)
    return {
        "packed": TensorLayout((trit_nbytes(rows * cols),), torch.uint8),
        "scale": scale_layout(shape, spec.group_size, spec.scale_dtype),
    }
