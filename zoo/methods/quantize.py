"""int-N quantization-aware training: fake quantization with the straight-through estimator.

The forward pass computes exactly what the int codec stores and decodes (same scales rounded to
their storage dtype, same rounding), so the exported checkpoint is the model that was trained.
Gradients pass straight through the rounding. With `clip="learned"` each group's clip value is a
parameter (LSQ-style): it may only clip harder than the group's |w| max, which keeps the largest
code at the grid's end, so re-encoding the trained weight reproduces it."""

from __future__ import annotations

import torch
from torch import nn

from zoo.formats import codecs
from zoo.formats.codecs.base import DTYPES, from_groups, to_groups
from zoo.formats.spec import CodecSpec, DenseSpec, IntSpec


def straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` in the forward pass, identity gradient to `x` in the backward pass."""
    return x + (value - x).detach()


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return straight_through(x, torch.round(x))


def stored(x: torch.Tensor, dtype_name: str) -> torch.Tensor:
    """x rounded to a storage dtype (as the codec stores scales), gradient straight through."""
    return straight_through(x, x.to(DTYPES[dtype_name]).to(x.dtype))


class RoundTripFake(nn.Module):
    """Any codec: forward decode(encode(w)), gradient straight through. Slower; the fallback."""

    def __init__(self, spec: CodecSpec):
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        restored = codecs.decode(codecs.encode(w, self.spec), self.spec, tuple(w.shape))
        return straight_through(w, restored.to(w.dtype))


class DenseFake(nn.Module):
    """Plain values stored in a float dtype: rounded to it, gradient straight through."""

    def __init__(self, spec: DenseSpec):
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return stored(w, self.spec.dtype)


class IntFake(nn.Module):
    """Symmetric zero-preserving int-N (levels -Q..Q, Q = 2^(N-1) - 1), per group of a row."""

    def __init__(self, spec: IntSpec, weight: torch.Tensor, *, clip: str = "absmax", percentile: float = 100.0):
        super().__init__()
        if not (spec.symmetric and spec.zero_preserving):
            raise ValueError("IntFake serves the symmetric zero-preserving grid; use RoundTripFake")
        self.spec = spec
        self.q = (1 << (spec.bits - 1)) - 1
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
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        if self.learned:  # LSQ: the gradient reaches the scale through the clamp
            q = round_ste(x / safe).clamp(-self.q, self.q) * scale
        else:
            q = straight_through(x, torch.round(x / safe).clamp(-self.q, self.q) * scale)
        return from_groups(q, matrix.shape[1]).reshape(shape).to(w.dtype)


def int_fake(spec: IntSpec, weight: torch.Tensor, *, clip: str, percentile: float) -> nn.Module:
    if spec.symmetric and spec.zero_preserving:
        return IntFake(spec, weight, clip=clip, percentile=percentile)
    return RoundTripFake(spec)
