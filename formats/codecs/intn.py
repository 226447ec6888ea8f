"""int-N codec, N = 1..8 (see `IntSpec` for the three grids).

Stored tensors:
    packed      uint8 (ceil(numel*N/8),)  unsigned codes u, row-major, bit order of `bitpack`
    scale       float16 (rows, groups)    one per group of a row
    zero_point  uint8 packed, asymmetric only: one N-bit integer z per group, same bit order

Unsigned codes: symmetric grids store u = q + 2^(N-1); asymmetric stores u directly.
Decoded value (float32 arithmetic, scale first rounded to its storage dtype):
    symmetric, zero-preserving:  (u - 2^(N-1)) * s          (u = 0 is never produced)
    symmetric mid-rise:          (u - 2^(N-1) + 0.5) * s
    asymmetric:                  (u - z) * s
Scales come from the group's range (absmax, or min/max with 0 forced inside). Codes: round to
nearest, ties to even (mid-tread and asymmetric); q = floor(w/s) for mid-rise, whose levels sit
halfway between integers (so 0.0 goes to +s/2). A group of zeros gets scale 0 and decodes to zeros.
"""

from __future__ import annotations

import torch

from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..errors import CodecError
from ..spec import IntSpec
from .base import (
    TensorLayout,
    as_matrix,
    from_groups,
    group_count,
    matrix_shape,
    round_to_dtype,
    row_codes,
    scale_layout,
    to_groups,
)


def _offset(spec: IntSpec) -> int:
    return 1 << (spec.bits - 1)


def _safe(scale: torch.Tensor) -> torch.Tensor:
    s = scale.to(torch.float32).unsqueeze(-1)
    return torch.where(s == 0, torch.ones_like(s), s)


def encode(weight: torch.Tensor, spec: IntSpec, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`scale` (symmetric zero-preserving grids only): the group scales to store instead of the absmax rule's,
    as chosen by a post-training method (GPTQ with clipping); values beyond the grid clamp to its ends."""
    w = as_matrix(weight)
    cols = w.shape[1]
    x = to_groups(w, spec.group_size)
    levels = (1 << spec.bits) - 1
    out: dict[str, torch.Tensor] = {}
    if scale is not None and not (spec.symmetric and spec.zero_preserving):
        raise CodecError(f"given scales need a symmetric zero-preserving grid, not {spec.describe()}")
    if spec.symmetric:
        half = _offset(spec)
        absmax = x.abs().amax(dim=-1)
        if spec.zero_preserving:
            if scale is None:
                scale = round_to_dtype(absmax / (half - 1), spec.scale_dtype)
            elif tuple(scale.shape) != tuple(absmax.shape):
                raise CodecError(f"given scales are {tuple(scale.shape)}, the groups {tuple(absmax.shape)}")
            else:
                scale = round_to_dtype(scale, spec.scale_dtype)
            q = torch.round(x / _safe(scale)).clamp(-(half - 1), half - 1)
        else:
            scale = round_to_dtype(absmax / (half - 0.5), spec.scale_dtype)
            q = torch.floor(x / _safe(scale)).clamp(-half, half - 1)
        codes = q + half
    else:
        lo = x.amin(dim=-1).clamp(max=0.0)
        hi = x.amax(dim=-1).clamp(min=0.0)
        scale = round_to_dtype((hi - lo) / levels, spec.scale_dtype)
        s = _safe(scale)
        zero = torch.round(-lo.unsqueeze(-1) / s).clamp(0, levels)
        codes = (torch.round(x / s) + zero).clamp(0, levels)
        out["zero_point"] = pack_bits(zero.reshape(-1).to(torch.int32), spec.bits)
    out["packed"] = pack_bits(from_groups(codes, cols).to(torch.int32), spec.bits)
    out["scale"] = scale
    return dict(sorted(out.items()))


def decode(tensors, spec: IntSpec, shape) -> torch.Tensor:
    rows, cols = matrix_shape(shape)
    _, n = group_count(cols, spec.group_size)
    codes = unpack_bits(tensors["packed"], spec.bits, rows * cols).view(rows, cols)
    zero = None if spec.symmetric else unpack_bits(tensors["zero_point"], spec.bits, rows * n).view(rows, n)
    return _values(codes, tensors["scale"], zero, spec).reshape(shape)


def decode_rows(tensors, spec: IntSpec, shape, rows: torch.Tensor) -> torch.Tensor:
    total, cols = matrix_shape(shape)
    _, n = group_count(cols, spec.group_size)
    codes = row_codes(tensors["packed"], spec.bits, total, cols, rows)
    zero = None if spec.symmetric else row_codes(tensors["zero_point"], spec.bits, total, n, rows)
    return _values(codes, tensors["scale"][rows], zero, spec)


def _values(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: IntSpec) -> torch.Tensor:
    """(rows, cols) float32 values from unsigned codes, each row's group scales and (asymmetric) zero points."""
    cols = codes.shape[1]
    x = to_groups(codes.to(torch.float32), spec.group_size)
    s = scale.to(torch.float32).unsqueeze(-1)
    if spec.symmetric:
        q = x - _offset(spec)
        if not spec.zero_preserving:
            q = q + 0.5
    else:
        q = x - zero.to(torch.float32).unsqueeze(-1)
    return from_groups(q * s, cols)


def layout(shape, spec: IntSpec) -> dict[str, TensorLayout]:
    rows, cols = matrix_shape(shape)
    _, n = group_count(cols, spec.group_size)
    out = {
        "packed": TensorLayout((packed_nbytes(rows * cols, spec.bits),), torch.uint8),
        "scale": scale_layout(shape, spec.group_size, spec.scale_dtype),
    }
    if not spec.symmetric:
        out["zero_point"] = TensorLayout((packed_nbytes(rows * n, spec.bits),), torch.uint8)
    return dict(sorted(out.items()))
