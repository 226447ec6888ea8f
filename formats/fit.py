"""Does a dense weight already have the structure a codec stores? (`zoo pack` asks this.)

N:M is checked exactly: a group with more than N nonzeros is refused. Every codec is then
checked by round trip: decode(encode(w)) must reproduce w to within `rtol` of each row's
largest |w|. The default 1e-3 admits the rounding of scales and centroids to float16 (at most
2^-11 of a value) and refuses weights that are off the grid (for int-N at least a quarter of
a step, which is >= 1/(4*127) ~ 2e-3 of the row's largest weight at 8 bits).

A symmetric zero-preserving int-N grid (alone or as N:M values) need not be the absmax rule's:
a post-training method that clips (GPTQ, here or in another tool) leaves groups whose largest
code is below 2^(N-1)-1. For those groups `fit` finds the scale: the group's largest |w| over
each possible largest code k, rounded to the scale's dtype, keeping the k with the smallest
error (the largest k among equals).
"""

from __future__ import annotations

import torch

from . import codecs
from .codecs import nm
from .codecs.base import DTYPES, as_matrix, round_to_dtype, to_groups
from .codecs.nm import group_nonzeros
from .errors import PatternError
from .spec import CodecSpec, IntSpec, NMSpec

DEFAULT_RTOL = 1e-3


def fit(weight: torch.Tensor, spec: CodecSpec, *, rtol: float = DEFAULT_RTOL) -> dict[str, torch.Tensor]:
    """The tensors `spec` stores for a weight that already has its structure; PatternError if it has not."""
    w = as_matrix(weight)
    if isinstance(spec, NMSpec):
        counts = group_nonzeros(w, spec.m)
        if bool((counts > spec.n).any()):
            row, group = (int(i) for i in (counts > spec.n).nonzero()[0])
            first = group * spec.m
            last = min(first + spec.m, w.shape[1]) - 1
            raise PatternError(
                f"not {spec.n}:{spec.m} sparse: row {row}, columns {first}-{last} hold "
                f"{int(counts[row, group])} nonzeros (at most {spec.n} allowed)"
            )
    tensors = codecs.encode(w, spec)
    worst = _deviation(tensors, spec, w)
    if worst > rtol:
        scale = _grid_scales(w, spec)
        if scale is not None:
            tensors = codecs.encode(w, spec, scale=scale)
            worst = _deviation(tensors, spec, w)
    if worst > rtol:
        raise _off_grid(spec, worst, rtol)
    return tensors


def check_fits(weight: torch.Tensor, spec: CodecSpec, *, rtol: float = DEFAULT_RTOL) -> None:
    fit(weight, spec, rtol=rtol)


def check_decodes_to(tensors, spec: CodecSpec, weight: torch.Tensor, *, rtol: float = DEFAULT_RTOL) -> None:
    """Do a codec's stored tensors decode to `weight`, within `rtol` of each row's largest |w|?"""
    worst = _deviation(tensors, spec, as_matrix(weight))
    if worst > rtol:
        raise _off_grid(spec, worst, rtol)


def _deviation(tensors, spec: CodecSpec, w: torch.Tensor) -> float:
    """The largest |decoded - w| as a fraction of its row's largest |w|."""
    restored = codecs.decode_checked(tensors, spec, tuple(w.shape)).reshape(w.shape)
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    return float(((restored - w).abs() / scale).max()) if w.numel() else 0.0


def _off_grid(spec: CodecSpec, worst: float, rtol: float) -> PatternError:
    return PatternError(
        f"weights are not representable as {spec.describe()}: a value deviates by "
        f"{worst:.2%} of its row's largest weight (allowed {rtol:.2%})",
        hint="`zoo pack` stores weights that are already compressed; use `zoo compress` to compress dense weights",
    )


def _grid_scales(w: torch.Tensor, spec: CodecSpec) -> torch.Tensor | None:
    """Group scales that put every group on its grid where one exists, for symmetric zero-preserving int-N
    (alone or as N:M values); None for any other codec."""
    if isinstance(spec, NMSpec):
        values, inner = nm.kept(w, spec)[1], spec.values
    else:
        values, inner = w, spec
    if not (isinstance(inner, IntSpec) and inner.symmetric and inner.zero_preserving):
        return None
    x = to_groups(values.to(torch.float32), inner.group_size)  # (rows, groups, size)
    absmax = x.abs().amax(dim=-1)
    top = (1 << (inner.bits - 1)) - 1
    best = round_to_dtype(absmax / top, inner.scale_dtype).to(torch.float32)
    error = _error(x, best, top)
    open_ = error > 0
    if bool(open_.any()):  # the groups off the absmax grid: the largest code with the smallest error
        x, absmax, error = x[open_], absmax[open_], error[open_]
        scale = best[open_]
        for k in range(top - 1, 0, -1):
            candidate = round_to_dtype(absmax / k, inner.scale_dtype).to(torch.float32)
            err = _error(x, candidate, top)
            better = err < error
            scale, error = torch.where(better, candidate, scale), torch.where(better, err, error)
        best[open_] = scale
    return best.to(DTYPES[inner.scale_dtype])


def _error(x: torch.Tensor, scale: torch.Tensor, top: int) -> torch.Tensor:
    """Per group, the largest |value - its nearest point on the grid of `scale`|."""
    s = scale.unsqueeze(-1)
    safe = torch.where(s == 0, torch.ones_like(s), s)
    return (torch.round(x / safe).clamp(-top, top) * s - x).abs().amax(dim=-1)
