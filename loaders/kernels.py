"""Compute paths for `mode="kernel"`: real kernels torch ships, never a dense copy of W.

Integer grids (CPU): int-N (N <= 7, or 8-bit symmetric), binary and ternary codecs, alone or as
the values of N:M, store W exactly as Q * s with Q small integers and one scale per (row,
group of columns). Such a layer runs as one int8 x int8 -> int32 matmul (`torch._int_mm`): the
activations are quantized to int8 per token on the fly (symmetric, scale max|x|/127) and the
int32 sums are scaled by the token and row scales. Where the codec has several column groups per
row, the grid is first collapsed to one int8 scale per row (W moves by at most half a step of
that row grid, ~0.4% of the row's largest weight): a matmul per group, each followed by a scaled
add over the whole output, ran slower than dense fp32 here.

This is the fast path on CPUs like ours (bench/results/load.md) and it is not exact: quantizing
activations costs about 1% relative error per layer, where materialize and packed reproduce the
dense model exactly. torch's weight-only kernels keep full-precision activations, but
`_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu` ran 35-60x slower than a dense fp32 matmul
here with fp32 inputs, and only as fast as it with bf16 inputs.

Kronecker (any device): y = sum_r (A_r (x) B_r) x is computed as A_r X B_r^T on the reshaped
input, so FLOPs and memory scale with the factors, exactly (fp32) up to summation order.

2:4 with float values (CUDA only): `torch.sparse.to_sparse_semi_structured`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from zoo.formats import codecs
from zoo.formats.bitpack import unpack_bits, unpack_trits
from zoo.formats.codecs.base import group_count, strip_prefix
from zoo.formats.codecs.kronecker import factor_shapes
from zoo.formats.codecs.nm import kept_positions, pattern_bits
from zoo.formats.spec import BinarySpec, CodecSpec, IntSpec, KroneckerSpec, NMSpec, TernarySpec

from .compat import int8_matmul


@dataclass
class IntGrid:
    """W[:, a:b] == q[:, a:b] * scale[:, g] exactly, for the g-th column range (a, b) in `bounds`."""

    q: torch.Tensor  # int8 (rows, cols)
    scale: torch.Tensor  # float32 (rows, groups)
    bounds: list[tuple[int, int]]


def _bounds(cols: int, group: int) -> list[tuple[int, int]]:
    return [(a, min(a + group, cols)) for a in range(0, cols, group)]


def _value_grid(tensors, spec, rows: int, cols: int) -> IntGrid | None:
    """Integer view of a value codec's (rows, cols) matrix, or None if its values are off any int8 grid."""
    if not isinstance(spec, (IntSpec, BinarySpec, TernarySpec)):
        return None
    g, _ = group_count(cols, spec.group_size)
    scale = tensors["scale"].to(torch.float32)
    if isinstance(spec, IntSpec):
        codes = unpack_bits(tensors["packed"], spec.bits, rows * cols).view(rows, cols)
        half = 1 << (spec.bits - 1)
        if spec.symmetric and spec.zero_preserving:
            q = codes - half
        elif spec.symmetric:  # mid-rise (u - half + 1/2) * s == (2(u - half) + 1) * (s/2)
            if spec.bits > 7:
                return None
            q, scale = 2 * (codes - half) + 1, scale / 2
        else:
            if spec.bits > 7:
                return None
            _, n = group_count(cols, spec.group_size)
            zero = unpack_bits(tensors["zero_point"], spec.bits, rows * n).view(rows, n)
            q = codes - zero.repeat_interleave(g, dim=1)[:, :cols]
    elif isinstance(spec, BinarySpec):
        q = unpack_bits(tensors["packed"], 1, rows * cols).view(rows, cols) * 2 - 1
    else:
        q = unpack_trits(tensors["packed"], rows * cols).view(rows, cols) - 1
    return IntGrid(q=q.to(torch.int8), scale=scale, bounds=_bounds(cols, g))


def int_grid(tensors, spec: CodecSpec, shape) -> IntGrid | None:
    """The exact integer view of a stored 2-D weight, or None when its codec has none."""
    if len(shape) != 2:
        return None
    rows, cols = shape
    if not isinstance(spec, NMSpec):
        return _value_grid(tensors, spec, rows, cols)
    # N:M: the kept values sit on the value codec's grid; scatter them back to their columns.
    n, m = spec.n, spec.m
    groups = -(-cols // m)
    kept_grid = _value_grid({k: v for k, v in tensors.items() if k != "nm_codes"}, spec.values, rows, groups * n)
    if kept_grid is None:
        return None
    kept_group, _ = group_count(groups * n, spec.values.group_size)
    if kept_group % n:  # a group of kept values would split an N:M group: no per-column scale
        return None
    codes = unpack_bits(tensors["nm_codes"], pattern_bits(n, m), rows * groups).long()
    positions = kept_positions(codes, n, m)
    q = torch.zeros(rows * groups, m, dtype=torch.int8, device=codes.device)
    q.scatter_(1, positions, kept_grid.q.reshape(rows * groups, n))
    q = q.view(rows, groups * m)[:, :cols]
    return IntGrid(q=q.contiguous(), scale=kept_grid.scale, bounds=_bounds(cols, kept_group // n * m))


def per_row_int8(grid: IntGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 Q, float32 row scale) with W ~ Q * scale[:, None]; exact for one group per row."""
    if len(grid.bounds) == 1:
        return grid.q, grid.scale[:, 0]
    weight = torch.cat([grid.q[:, a:b].to(torch.float32) * grid.scale[:, i : i + 1] for i, (a, b) in enumerate(grid.bounds)], 1)
    scale = weight.abs().amax(dim=1) / 127
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.round(weight / safe.unsqueeze(1)).to(torch.int8), scale


# Adding then subtracting 1.5 * 2**23 rounds a float32 of magnitude < 2**22 to the nearest integer
# (ties to even, like torch.round), about 9x faster than torch.round on our CPU.
_ROUNDER = 12582912.0


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per row) with x ~ values * scale, scale = max|x| / 127."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127
    values = (x * (1 / scale)).add_(_ROUNDER).sub_(_ROUNDER)
    return values.to(torch.int8), scale


class Int8Matmul(torch.nn.Module):
    """y = x W^T (+ b) for W on an integer grid: one int8 x int8 matmul, per-token int8 activations."""

    def __init__(self, grid: IntGrid):
        super().__init__()
        q, scale = per_row_int8(grid)
        self.register_buffer("q_t", q.t().contiguous(), persistent=False)
        self.register_buffer("row_scale", scale, persistent=False)

    def _apply(self, fn, recurse=True):
        scale = self.row_scale
        super()._apply(fn, recurse)
        if self.row_scale.dtype != scale.dtype:  # model.to(dtype): the row scales stay float32
            self.row_scale = scale.to(device=self.row_scale.device)
        return self

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        xq, token_scale = quantize_per_token(x.reshape(-1, shape[-1]).to(torch.float32))
        out = int8_matmul(xq, self.q_t).to(torch.float32).mul_(token_scale).mul_(self.row_scale)
        if bias is not None:
            out = out.add_(bias.to(torch.float32))
        return out.reshape(*shape[:-1], -1).to(x.dtype)


def kronecker_factors(tensors, spec: KroneckerSpec, shape) -> tuple[torch.Tensor, torch.Tensor]:
    a_shape, b_shape = factor_shapes(shape, spec)
    a = codecs.decode_checked(strip_prefix(tensors, "kron_a"), spec.factors, a_shape)
    b = codecs.decode_checked(strip_prefix(tensors, "kron_b"), spec.factors, b_shape)
    return a, b


def kronecker_linear(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., n1*n2) -> (..., m1*m2) with W = sum_r A_r (x) B_r, without building W.

    With X the tokens reshaped to (M, n1, n2), each term is A_r X B_r^T. Laid out as one
    (n1, M*n2) matrix, the A side is a single large GEMM for all tokens (a batched product of M
    small ones is several times slower on CPU), and the B side one GEMM over its small dimension.
    Multiply-adds per token: r * m1 * n2 * (n1 + m2), against m1 * m2 * n1 * n2 for the dense
    product: about r / m2 of it when B is small (as many at rank 2 with B 2 x 2, half at rank 1)."""
    _, m1, n1 = a.shape
    _, m2, n2 = b.shape
    lead = x.shape[:-1]
    xs = x.reshape(-1, n1, n2).to(a.dtype)
    tokens = xs.shape[0]
    columns = xs.transpose(0, 1).reshape(n1, tokens * n2)  # (n1, M*n2)
    out = None
    for a_r, b_r in zip(a, b, strict=True):
        term = (a_r @ columns).view(m1 * tokens, n2) @ b_r.t()  # (m1*M, m2)
        out = term if out is None else out.add_(term)
    out = out.view(m1, tokens, m2).transpose(0, 1).reshape(*lead, m1 * m2)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(x.dtype)


def semi_structured(weight: torch.Tensor):
    """A 2:4-sparse CUDA weight in torch's semi-structured format (cuSPARSELt / CUTLASS)."""
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(weight)


__all__ = ["Int8Matmul", "IntGrid", "int_grid", "kronecker_factors", "kronecker_linear", "semi_structured"]
