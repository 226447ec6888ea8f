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

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..bitpack import pack_bits, packed_nbytes, unpack_bits, unpack_table
from ..errors import CodecError
from .base import (
    Codec,
    FakeOptions,
    FloatDType,
    IntGrid,
    RoundTripFake,
    SpecBase,
    TensorLayout,
    as_matrix,
    from_groups,
    grid_bounds,
    group_count,
    group_text,
    matrix_shape,
    register,
    round_ste,
    round_to_dtype,
    row_codes,
    scale_groups_,
    scale_layout,
    side_bits,
    stored,
    straight_through,
    to_groups,
)


class IntSpec(SpecBase):
    """Integer codes of `bits` bits with one fp16 scale per group of `group_size` consecutive
    values of a row (None: one per row).

    symmetric + zero_preserving: narrow-range mid-tread grid q*s, q in [-(2^(b-1)-1), 2^(b-1)-1];
        0.0 encodes to q = 0 and decodes to exactly 0.0.
    symmetric, not zero_preserving: mid-rise grid (q+1/2)*s, q in [-2^(b-1), 2^(b-1)-1]; uses all
        2^b levels but has no zero.
    asymmetric: (u - z)*s with an integer zero point z per group; the range always covers 0, so 0.0
        is exact too.
    """

    codec: Literal["int"] = "int"
    bits: int = Field(ge=1, le=8)
    group_size: int | None = Field(default=128, ge=1)
    symmetric: bool = True
    zero_preserving: bool = True
    scale_dtype: FloatDType = "float16"

    @model_validator(mode="after")
    def _check(self) -> IntSpec:
        if self.symmetric and self.zero_preserving and self.bits < 2:
            raise ValueError("a symmetric zero-preserving grid needs bits >= 2 (use the binary codec for 1 bit)")
        if not self.symmetric and not self.zero_preserving:
            raise ValueError("asymmetric int is always zero-preserving; leave zero_preserving true")
        return self

    def describe(self) -> str:
        mode = ("sym" if self.zero_preserving else "sym-midrise") if self.symmetric else "asym"
        return f"int{self.bits} {group_text(self.group_size)} {mode}"


def _offset(spec: IntSpec) -> int:
    return 1 << (spec.bits - 1)


def _mid_tread(x: torch.Tensor, safe_scale: torch.Tensor, top: int) -> torch.Tensor:
    """Codes q of the symmetric zero-preserving grid, round to nearest (ties to even), |q| <= top: the rule
    encode and the training fake share."""
    return torch.round(x / safe_scale).clamp(-top, top)


def _safe(scale: torch.Tensor) -> torch.Tensor:
    s = scale.to(torch.float32).unsqueeze(-1)
    return torch.where(s == 0, torch.ones_like(s), s)


def _levels(spec: IntSpec) -> torch.Tensor:
    """Each unsigned code's value before scaling, float32, indexed by code: u - 2^(N-1) (+ 1/2 mid-rise) for
    symmetric grids, u itself for asymmetric ones (its zero point is subtracted per group)."""
    levels = torch.arange(1 << spec.bits, dtype=torch.float32)
    if spec.symmetric:
        levels = levels - _offset(spec)
        if not spec.zero_preserving:
            levels = levels + 0.5
    return levels


def _values(levels: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: IntSpec) -> torch.Tensor:
    """(rows, cols) float32 values from each code's level (`_levels`, a fresh tensor: scaled in place), each
    row's group scales and (asymmetric) zero points."""
    if not spec.symmetric:
        assert zero is not None, "asymmetric codes come with zero points (decode and decode_rows read them)"
    return scale_groups_(levels, scale, spec.group_size, zero)


class IntFake(nn.Module):
    """Symmetric zero-preserving int-N (levels -Q..Q, Q = 2^(N-1) - 1), per group of a row: the codec's grid and
    scale rule, with the gradient straight through the rounding. With `clip="learned"` each group's clip value
    is a parameter (LSQ-style): it may only clip harder than the group's |w| max, which keeps the largest code
    at the grid's end, so re-encoding the trained weight reproduces it."""

    def __init__(self, spec: IntSpec, weight: torch.Tensor, *, clip: str = "absmax", percentile: float = 100.0):
        super().__init__()
        if not (spec.symmetric and spec.zero_preserving):
            raise ValueError("IntFake serves the symmetric zero-preserving grid; use RoundTripFake")
        self.spec = spec
        self.q = _offset(spec) - 1
        self.learned = clip == "learned"
        if self.learned:
            groups = to_groups(weight.detach().float().reshape(weight.shape[0], -1), spec.group_size).abs()
            start = groups.amax(-1) if percentile >= 100 else torch.quantile(groups, percentile / 100, dim=-1)
            self.clip = nn.Parameter(start.clamp(min=1e-8))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        shape = w.shape
        matrix = w.reshape(shape[0], -1).float()
        x = to_groups(matrix, self.spec.group_size)
        absmax = x.detach().abs().amax(-1)
        clip = torch.minimum(self.clip.abs(), absmax) if self.learned else absmax
        scale = stored(clip / self.q, self.spec.scale_dtype).unsqueeze(-1)
        if self.learned:  # LSQ: the gradient reaches the scale through the clamp
            q = round_ste(x / _safe_like(scale)).clamp(-self.q, self.q) * scale
        else:
            q = straight_through(x, _mid_tread(x, _safe_like(scale), self.q) * scale)
        return from_groups(q, matrix.shape[1]).reshape(shape).to(w.dtype)


def _safe_like(scale: torch.Tensor) -> torch.Tensor:
    """`scale` with zeros (groups of zeros) replaced by 1, keeping its graph (a learned clip's gradient)."""
    return torch.where(scale == 0, torch.ones_like(scale), scale)


@register
class Int(Codec):
    spec = IntSpec
    takes_scale = True

    def encode(self, weight: torch.Tensor, spec: IntSpec, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
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
                q = _mid_tread(x, _safe(scale), half - 1)
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

    def decode(self, tensors, spec: IntSpec, shape) -> torch.Tensor:
        rows, cols = matrix_shape(shape)
        _, n = group_count(cols, spec.group_size)
        levels = unpack_table(tensors["packed"], spec.bits, rows * cols, _levels(spec)).view(rows, cols)
        zero = None if spec.symmetric else unpack_bits(tensors["zero_point"], spec.bits, rows * n).view(rows, n)
        return _values(levels, tensors["scale"], zero, spec).reshape(shape)

    def decode_rows(self, tensors, spec: IntSpec, shape, rows: torch.Tensor) -> torch.Tensor:
        total, cols = matrix_shape(shape)
        _, n = group_count(cols, spec.group_size)
        codes = row_codes(tensors["packed"], spec.bits, total, cols, rows)
        zero = None if spec.symmetric else row_codes(tensors["zero_point"], spec.bits, total, n, rows)
        return _values(_levels(spec).to(codes.device)[codes], tensors["scale"][rows], zero, spec)

    def layout(self, shape, spec: IntSpec) -> dict[str, TensorLayout]:
        rows, cols = matrix_shape(shape)
        _, n = group_count(cols, spec.group_size)
        out = {
            "packed": TensorLayout((packed_nbytes(rows * cols, spec.bits),), torch.uint8),
            "scale": scale_layout(shape, spec.group_size, spec.scale_dtype),
        }
        if not spec.symmetric:
            out["zero_point"] = TensorLayout((packed_nbytes(rows * n, spec.bits),), torch.uint8)
        return dict(sorted(out.items()))

    def row_unit(self, spec: IntSpec) -> int:
        return 8  # a block of rows ends its bit stream on a byte at any width

    def value_bits(self, spec: IntSpec) -> float:
        return float(spec.bits)

    def tags(self, spec: IntSpec) -> list[str]:
        return [f"int{spec.bits}"]

    def information_bits(self, shape, spec: IntSpec) -> float:
        rows, cols = matrix_shape(shape)
        return rows * cols * spec.bits + side_bits(self.layout(shape, spec))

    def int_grid(self, tensors, spec: IntSpec, rows: int, cols: int) -> IntGrid | None:
        g, n = group_count(cols, spec.group_size)
        scale = tensors["scale"].to(torch.float32)
        half = _offset(spec)
        codes = torch.arange(1 << spec.bits, dtype=torch.int32)
        if spec.symmetric and spec.zero_preserving:
            q = unpack_table(tensors["packed"], spec.bits, rows * cols, (codes - half).to(torch.int8))
        elif spec.symmetric:  # mid-rise (u - half + 1/2) * s == (2(u - half) + 1) * (s/2)
            if spec.bits > 7:
                return None
            q = unpack_table(tensors["packed"], spec.bits, rows * cols, (2 * (codes - half) + 1).to(torch.int8))
            scale = scale / 2
        else:
            if spec.bits > 7:
                return None
            zero = unpack_bits(tensors["zero_point"], spec.bits, rows * n).view(rows, n)
            u = unpack_bits(tensors["packed"], spec.bits, rows * cols).view(rows, cols)
            q = (u - zero.repeat_interleave(g, dim=1)[:, :cols]).to(torch.int8)
        return IntGrid(q=q.view(rows, cols), scale=scale, bounds=grid_bounds(cols, g))

    def fake(self, spec: IntSpec, weight, options: FakeOptions) -> nn.Module:
        if spec.symmetric and spec.zero_preserving:
            return IntFake(spec, weight, clip=options.clip, percentile=options.percentile)
        return RoundTripFake(spec)
