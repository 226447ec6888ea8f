"""Does a dense weight already have the structure a codec stores? (`zoo pack` asks this.)

N:M is checked exactly: a group with more than N nonzeros is refused. Every codec is then
checked by round trip: decode(encode(w)) must reproduce w to within `rtol` of each row's
largest |w|. The default 1e-3 admits the rounding of scales and centroids to float16 (at most
2^-11 of a value) and refuses weights that are off the grid (for int-N at least a quarter of
a step, which is >= 1/(4*127) ~ 2e-3 of the row's largest weight at 8 bits).
"""

from __future__ import annotations

import torch

from . import codecs
from .codecs.base import as_matrix
from .codecs.nm import group_nonzeros
from .errors import PatternError
from .spec import CodecSpec, NMSpec

DEFAULT_RTOL = 1e-3


def check_fits(weight: torch.Tensor, spec: CodecSpec, *, rtol: float = DEFAULT_RTOL) -> None:
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
    check_decodes_to(codecs.encode(w, spec), spec, w, rtol=rtol)


def check_decodes_to(tensors, spec: CodecSpec, weight: torch.Tensor, *, rtol: float = DEFAULT_RTOL) -> None:
    """Do a codec's stored tensors decode to `weight`, within `rtol` of each row's largest |w|?"""
    w = as_matrix(weight)
    restored = codecs.decode_checked(tensors, spec, tuple(weight.shape)).reshape(w.shape)
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    deviation = ((restored - w).abs() / scale).max()
    if float(deviation) > rtol:
        raise PatternError(
            f"weights are not representable as {spec.describe()}: a value deviates by "
            f"{float(deviation):.2%} of its row's largest weight (allowed {rtol:.2%})",
            hint="`zoo pack` stores weights that are already compressed; use `zoo compress` to compress dense weights",
        )
