"""N:M codec: in every group of M consecutive weights of a row keep N, store which (a pattern
code) and the kept values (through a value codec).

Groups: a row is split into ceil(cols/M) groups of M; the last group of a row that is not a
multiple of M is treated as zero-padded to M (padding is never kept while a real weight is
left, and it is cropped on decode).

Selection: the N weights of largest |w|, ties to the lower position (a group that already has
at most N nonzeros keeps all of them exactly).

Pattern code: the kept positions c_1 < ... < c_N (0-based within the group) are ranked in the
colexicographic order of combinations, code = sum_i C(c_i, i) (i = 1..N), which is a bijection
onto 0 .. C(M,N)-1; codes are packed at ceil(log2 C(M,N)) bits (2:4: 3 bits) in bitpack order.

Stored tensors:
    nm_codes  uint8 (ceil(rows*groups*bits/8),)
    ...       the value codec's tensors for the kept values, seen as a (rows, groups*N) matrix
              whose row holds each group's kept values in ascending position
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .. import codecs as _codecs
from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..errors import CodecError
from ..spec import NMSpec
from .base import TensorLayout, as_matrix, matrix_shape, row_codes

_BINOM = torch.tensor([[math.comb(j, i) for i in range(17)] for j in range(17)], dtype=torch.int64)


def pattern_bits(n: int, m: int) -> int:
    return max(1, math.ceil(math.log2(math.comb(m, n))))


def pattern_codes(mask: torch.Tensor) -> torch.Tensor:
    """Colex rank of each row of a (groups, M) boolean mask with N set bits."""
    m = mask.shape[1]
    mask = mask.to(torch.int64)
    order = mask.cumsum(dim=1)  # i for the i-th kept position
    binom = _BINOM.to(mask.device)
    return (mask * binom[torch.arange(m, device=mask.device), order]).sum(dim=1)


@functools.cache
def pattern_table(n: int, m: int) -> torch.Tensor:
    """(C(M,N), M) boolean masks indexed by pattern code."""
    every = torch.arange(1 << m, dtype=torch.int64)
    bits = ((every.unsqueeze(1) >> torch.arange(m)) & 1).bool()
    masks = bits[bits.sum(dim=1) == n]
    table = torch.empty_like(masks)
    table[pattern_codes(masks)] = masks
    return table


@functools.cache
def positions_table(n: int, m: int) -> torch.Tensor:
    """(C(M,N), N) ascending kept positions, indexed by pattern code."""
    table = pattern_table(n, m)
    key = (~table).to(torch.int64) * m + torch.arange(m)
    return key.argsort(dim=1)[:, :n].contiguous()


def kept_positions(codes: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """(groups, N) ascending positions of the kept weights, from their pattern codes."""
    return positions_table(n, m).to(codes.device)[codes]


def _groups(cols: int, m: int) -> int:
    return math.ceil(cols / m)


def select(w: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N:M magnitude selection of a (rows, cols) matrix: the (rows*groups, M) mask of kept weights
    and their (rows*groups, N) ascending positions."""
    rows, cols = w.shape
    groups = _groups(cols, m)
    pad = groups * m - cols
    magnitude = F.pad(w.abs(), (0, pad), value=-1.0).view(rows * groups, m)
    top = magnitude.sort(dim=1, descending=True, stable=True).indices[:, :n]
    return torch.zeros_like(magnitude, dtype=torch.bool).scatter_(1, top, True), top.sort(dim=1).values


def encode(weight: torch.Tensor, spec: NMSpec, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`scale`: given scales of the value codec (see `codecs.encode`)."""
    mask, values = kept(as_matrix(weight), spec)
    out = {"nm_codes": pack_bits(pattern_codes(mask), pattern_bits(spec.n, spec.m))}
    out.update(_codecs.encode(values, spec.values, scale=scale))
    return out


def kept(w: torch.Tensor, spec: NMSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows*groups, M) mask of the weights a (rows, cols) matrix keeps, and the kept values as the
    (rows, groups*N) matrix the value codec stores."""
    rows, cols = w.shape
    groups = _groups(cols, spec.m)
    mask, positions = select(w, spec.n, spec.m)
    padded = F.pad(w, (0, groups * spec.m - cols)).view(rows * groups, spec.m)
    return mask, padded.gather(1, positions).view(rows, groups * spec.n)


def decode(tensors, spec: NMSpec, shape) -> torch.Tensor:
    rows, cols = matrix_shape(shape)
    n, m = spec.n, spec.m
    groups = _groups(cols, m)
    codes = unpack_bits(tensors["nm_codes"], pattern_bits(n, m), rows * groups).long()
    if codes.numel() and int(codes.max()) >= math.comb(m, n):
        raise CodecError(f"invalid {n}:{m} pattern code {int(codes.max())} (at most {math.comb(m, n) - 1})")
    values = {k: v for k, v in tensors.items() if k != "nm_codes"}
    kept = _codecs.decode_checked(values, spec.values, (rows, groups * n)).reshape(rows * groups, n)
    dense = torch.zeros(rows * groups, m, dtype=torch.float32, device=kept.device)
    dense.scatter_(1, kept_positions(codes, n, m), kept)
    return dense.view(rows, groups * m)[:, :cols].reshape(shape)


def decode_rows(tensors, spec: NMSpec, shape, rows: torch.Tensor) -> torch.Tensor:
    """Only the given rows: their pattern codes, and their kept values through the value codec's own
    `decode_rows` (the kept values form a (rows, groups * N) matrix)."""
    total, cols = matrix_shape(shape)
    n, m = spec.n, spec.m
    groups = _groups(cols, m)
    codes = row_codes(tensors["nm_codes"], pattern_bits(n, m), total, groups, rows).long().reshape(-1)
    if codes.numel() and int(codes.max()) >= math.comb(m, n):
        raise CodecError(f"invalid {n}:{m} pattern code {int(codes.max())} (at most {math.comb(m, n) - 1})")
    values = {k: v for k, v in tensors.items() if k != "nm_codes"}
    kept = _codecs.decode_rows(values, spec.values, (total, groups * n), rows).reshape(-1, n)
    dense = torch.zeros(len(rows) * groups, m, dtype=torch.float32, device=kept.device)
    dense.scatter_(1, kept_positions(codes, n, m), kept)
    return dense.view(len(rows), groups * m)[:, :cols]


def layout(shape, spec: NMSpec) -> dict[str, TensorLayout]:
    rows, cols = matrix_shape(shape)
    groups = _groups(cols, spec.m)
    out = {"nm_codes": TensorLayout((packed_nbytes(rows * groups, pattern_bits(spec.n, spec.m)),), torch.uint8)}
    out.update(_codecs.layout((rows, groups * spec.n), spec.values))
    return out


def group_nonzeros(w: torch.Tensor, m: int) -> torch.Tensor:
    """(rows, groups) count of nonzero weights per group of M, for a (rows, cols) matrix."""
    rows, cols = w.shape
    groups = _groups(cols, m)
    return (F.pad(w, (0, groups * m - cols)) != 0).view(rows, groups, m).sum(dim=-1)
