"""Compute paths for `mode="kernel"`: real kernels torch ships, never a dense copy of W.

Integer grids (CPU): the codecs whose `int_grid` (formats/codecs/) gives one (int-N with N <= 7 or
8-bit symmetric, binary, ternary, alone or as the values of N:M) store W exactly as Q * s with Q
small integers and one scale per (row, group of columns). Such a layer runs as one int8 x int8 -> int32
matmul (`torch._int_mm`): the activations are quantized to int8 per token on the fly (symmetric, scale
max|x|/127) and the int32 sums are scaled by the token and row scales. Where the codec has several column
groups per row, the grid is first collapsed to one int8 scale per row (W moves by at most half a step of
that row grid, ~0.4% of the row's largest weight): a matmul per group, each followed by a scaled
add over the whole output, ran slower than dense fp32 here.

This is the fast path on CPUs like ours (bench/results/load.md) and it is not exact: quantizing
activations costs about 1% relative error per layer, where materialize and packed reproduce the
dense model exactly. torch's weight-only kernels keep full-precision activations, but
`_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu` ran 35-60x slower than a dense fp32 matmul
here with fp32 inputs, and only as fast as it with bf16 inputs.

Factored codecs (any device; Kronecker): the codec applies its own factors to x
(`Codec.factor_linear`, formats/codecs/kronecker.py), so FLOPs and memory scale with the factors.

2:4 with float values (CUDA only): `torch.sparse.to_sparse_semi_structured`.
"""

from __future__ import annotations

import torch
from zoo.formats.codecs import IntGrid, int_grid

from .compat import int8_matmul


def per_row_int8(grid: IntGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 Q, float32 row scale) with W ~ Q * scale[:, None]; exact for one group per row."""
    if len(grid.bounds) == 1:
        return grid.q, grid.scale[:, 0]
    weight = _scaled(grid)
    scale = weight.abs().amax(dim=1) / 127
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    return weight.div_(safe.unsqueeze(1)).round_().to(torch.int8), scale


def _scaled(grid: IntGrid) -> torch.Tensor:
    """q * scale of each column range, float32 (rows, cols): one broadcast product over the groups (the last
    one zero-padded) when every range but the last has the first's width, else range by range."""
    rows, cols = grid.q.shape
    width = grid.bounds[0][1] - grid.bounds[0][0]
    if any(a != i * width for i, (a, _) in enumerate(grid.bounds)):
        return torch.cat(
            [grid.q[:, a:b].to(torch.float32) * grid.scale[:, i : i + 1] for i, (a, b) in enumerate(grid.bounds)], 1
        )
    groups = len(grid.bounds)
    q = torch.nn.functional.pad(grid.q, (0, groups * width - cols)) if groups * width != cols else grid.q
    weight = q.reshape(rows, groups, width).to(torch.float32).mul_(grid.scale[:, :groups].unsqueeze(-1))
    return weight.view(rows, groups * width)[:, :cols]


# Adding 1.5 * 2**23 to a float32 v of magnitude < 2**22 rounds it to the nearest integer (ties to even, like
# torch.round), about 9x faster than torch.round on our CPU: the sum's bits, read as an int32, are
# 0x4B400000 + round(v), whose low byte is round(v) as an int8 for |v| <= 127. So a cast int32 -> int8 that
# wraps (keeps the low byte, as torch's does on CPU) quantizes without subtracting 1.5 * 2**23 back, one pass
# fewer over the activations; `_CAST_WRAPS` checks that once, and a torch whose cast saturates instead
# subtracts. Under torch.compile the plain torch.round is used: inductor fuses it into one loop anyway.
_ROUNDER = 12582912.0


def _cast_wraps() -> bool:
    probe = torch.tensor([-127.0, -1.5, -0.5, 0.0, 0.5, 2.5, 127.0]).add_(_ROUNDER).view(torch.int32)
    return torch.equal(probe.to(torch.int8), torch.tensor([-127, -2, 0, 0, 0, 2, 127], dtype=torch.int8))


_CAST_WRAPS = _cast_wraps()


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per row) with x ~ values * scale, scale = max|x| / 127."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=torch.finfo(torch.float32).tiny).div_(127)
    if torch.compiler.is_compiling():
        return torch.round(x / scale).to(torch.int8), scale
    values = (x * scale.reciprocal()).add_(_ROUNDER)
    if _CAST_WRAPS:
        return values.view(torch.int32).to(torch.int8), scale
    return values.sub_(_ROUNDER).to(torch.int8), scale


class Int8Matmul(torch.nn.Module):
    """y = x W^T (+ b) for W on an integer grid: one int8 x int8 matmul, per-token int8 activations."""

    q_t: torch.Tensor  # buffers, from register_buffer
    row_scale: torch.Tensor

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


def semi_structured(weight: torch.Tensor) -> torch.Tensor:
    """A 2:4-sparse CUDA weight in torch's semi-structured format (cuSPARSELt / CUTLASS)."""
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(weight)


__all__ = ["Int8Matmul", "IntGrid", "int_grid", "semi_structured"]
