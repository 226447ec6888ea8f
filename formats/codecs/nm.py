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
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from .. import codecs as _codecs
from ..bitpack import gather_rows, pack_bits, packed_nbytes, unpack_bits
from ..errors import CodecError
from .base import (
    Codec,
    FakeOptions,
    IntGrid,
    SpecBase,
    TensorLayout,
    as_matrix,
    fake_for,
    grid_bounds,
    group_count,
    matrix_shape,
    register,
    row_codes,
)
from .dense import DenseSpec

if TYPE_CHECKING:  # the union of value codecs, built once every codec has registered (formats/codecs/__init__)
    from . import ValueSpec


class NMSpec(SpecBase):
    """Keep `n` of every `m` consecutive weights of a row (largest magnitude, ties to the lower
    index); store one pattern code per group and the kept values through `values`."""

    codec: Literal["nm"] = "nm"
    n: int = Field(ge=1)
    m: int = Field(le=16)
    values: ValueSpec = DenseSpec()

    @model_validator(mode="after")
    def _check(self) -> NMSpec:
        if not 1 <= self.n < self.m <= 16:
            raise ValueError(f"N:M needs 1 <= N < M <= 16, got {self.n}:{self.m}")
        return self

    def describe(self) -> str:
        return f"{self.n}:{self.m} + {self.values.describe()}"


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
    """(groups, N) ascending positions (int64) of the kept weights, from their pattern codes: gathered as uint8
    rows (one word per group for N <= 8: advanced indexing of an int64 table costs several times more)."""
    return gather_rows(_positions_u8(n, m).to(codes.device), codes.reshape(-1)).long()


@functools.cache
def _positions_u8(n: int, m: int) -> torch.Tensor:
    return positions_table(n, m).to(torch.uint8)  # positions < M <= 16


def _checked(codes: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Pattern codes, after checking each names a pattern (a 3-bit 2:4 code could say 6 or 7)."""
    if codes.numel() and int(codes.max()) >= math.comb(m, n):
        raise CodecError(f"invalid {n}:{m} pattern code {int(codes.max())} (at most {math.comb(m, n) - 1})")
    return codes


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


def kept(w: torch.Tensor, spec: NMSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows*groups, M) mask of the weights a (rows, cols) matrix keeps, and the kept values as the
    (rows, groups*N) matrix the value codec stores."""
    rows, cols = w.shape
    groups = _groups(cols, spec.m)
    mask, positions = select(w, spec.n, spec.m)
    padded = F.pad(w, (0, groups * spec.m - cols)).view(rows * groups, spec.m)
    return mask, padded.gather(1, positions).view(rows, groups * spec.n)


def group_nonzeros(w: torch.Tensor, m: int) -> torch.Tensor:
    """(rows, groups) count of nonzero weights per group of M, for a (rows, cols) matrix."""
    rows, cols = w.shape
    groups = _groups(cols, m)
    return (F.pad(w, (0, groups * m - cols)) != 0).view(rows, groups, m).sum(dim=-1)


class NMFake(nn.Module):
    """N:M sparsity during training (NxMiFormer / deep-compression style), optionally with a value codec.

    The mask is a buffer: the N largest |w| of every M consecutive weights of a row (`select`, as encode picks
    them), recomputed from the latent weights every `mask_interval` steps (`update_mask`, driven by a Trainer
    callback), so weights pruned early can grow back. Pruned weights still get gradients (straight through),
    which is what lets them return. With a ramp, pruning tightens gradually from dense to N:M (gradual magnitude
    pruning); the value codec starts once the final N is reached. The kept values go through the value codec's
    own fake in exactly the layout this codec stores them: (rows, groups * N)."""

    keep: torch.Tensor  # buffers, from register_buffer
    mask: torch.Tensor
    positions: torch.Tensor

    def __init__(self, spec: NMSpec, weight: torch.Tensor, options: FakeOptions):
        super().__init__()
        self.spec = spec
        self.rows = weight.shape[0]
        self.cols = weight[0].numel()
        self.groups = math.ceil(self.cols / spec.m)
        _, values = kept(weight.detach().reshape(self.rows, -1).float(), spec)
        self.values = fake_for(spec.values, values, options)
        self.register_buffer("keep", torch.tensor(spec.n))  # weights kept per group now (n..m)
        self.register_buffer("mask", torch.zeros(self.rows * self.groups, spec.m, dtype=torch.bool))
        self.register_buffer("positions", torch.zeros(self.rows * self.groups, spec.n, dtype=torch.long))
        self.update_mask(weight, spec.n)

    @torch.no_grad()
    def update_mask(self, weight: torch.Tensor, keep: int) -> None:
        matrix = weight.detach().reshape(self.rows, -1).float()
        mask, positions = select(matrix, keep, self.spec.m)
        self.mask.copy_(mask)
        self.keep.fill_(keep)
        if keep == self.spec.n:
            self.positions.copy_(positions)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        m = self.spec.m
        padded = F.pad(w.reshape(self.rows, -1), (0, self.groups * m - self.cols)).view(-1, m)
        pruned_grad = padded * ~self.mask  # zero forward, gradient straight through to pruned weights
        if int(self.keep) > self.spec.n or self.values is None:
            kept_values = padded * self.mask
        else:
            values = padded.gather(1, self.positions).view(self.rows, self.groups * self.spec.n)
            fake = self.values(values).reshape(-1, self.spec.n)
            kept_values = torch.zeros_like(padded).scatter(1, self.positions, fake)
        out = kept_values + pruned_grad - pruned_grad.detach()
        return out.reshape(self.rows, -1)[:, : self.cols].reshape(w.shape)


@register
class NM(Codec):
    spec = NMSpec
    value_codec = False
    takes_scale = True

    def encode(self, weight: torch.Tensor, spec: NMSpec, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`scale`: given scales of the value codec (see `codecs.encode`)."""
        mask, values = kept(as_matrix(weight), spec)
        out = {"nm_codes": pack_bits(pattern_codes(mask), pattern_bits(spec.n, spec.m))}
        out.update(_codecs.encode(values, spec.values, scale=scale))
        return out

    def decode(self, tensors, spec: NMSpec, shape) -> torch.Tensor:
        rows, cols = matrix_shape(shape)
        n, m = spec.n, spec.m
        groups = _groups(cols, m)
        codes = _checked(unpack_bits(tensors["nm_codes"], pattern_bits(n, m), rows * groups), n, m)
        values = {k: v for k, v in tensors.items() if k != "nm_codes"}
        kept = _codecs.decode_checked(values, spec.values, (rows, groups * n)).reshape(rows * groups, n)
        dense = torch.zeros(rows * groups, m, dtype=torch.float32, device=kept.device)
        dense.scatter_(1, kept_positions(codes, n, m), kept)
        return dense.view(rows, groups * m)[:, :cols].reshape(shape)

    def decode_rows(self, tensors, spec: NMSpec, shape, rows: torch.Tensor) -> torch.Tensor:
        """Only the given rows: their pattern codes, and their kept values through the value codec's own
        `decode_rows` (the kept values form a (rows, groups * N) matrix)."""
        total, cols = matrix_shape(shape)
        n, m = spec.n, spec.m
        groups = _groups(cols, m)
        codes = _checked(row_codes(tensors["nm_codes"], pattern_bits(n, m), total, groups, rows).reshape(-1), n, m)
        values = {k: v for k, v in tensors.items() if k != "nm_codes"}
        kept = _codecs.decode_rows(values, spec.values, (total, groups * n), rows).reshape(-1, n)
        dense = torch.zeros(len(rows) * groups, m, dtype=torch.float32, device=kept.device)
        dense.scatter_(1, kept_positions(codes, n, m), kept)
        return dense.view(len(rows), groups * m)[:, :cols]

    def layout(self, shape, spec: NMSpec) -> dict[str, TensorLayout]:
        rows, cols = matrix_shape(shape)
        groups = _groups(cols, spec.m)
        out = {"nm_codes": TensorLayout((packed_nbytes(rows * groups, pattern_bits(spec.n, spec.m)),), torch.uint8)}
        out.update(_codecs.layout((rows, groups * spec.n), spec.values))
        return out

    def row_unit(self, spec: NMSpec) -> int | None:
        return _codecs.codec_for(spec.values).row_unit(spec.values)

    def value_bits(self, spec: NMSpec) -> float:
        return _codecs.codec_for(spec.values).value_bits(spec.values)

    def sparsity_pattern(self, spec: NMSpec) -> tuple[int, int]:
        return spec.n, spec.m

    def sparsity(self, spec: NMSpec) -> float:
        return 1.0 - spec.n / spec.m

    def tags(self, spec: NMSpec) -> list[str]:
        return [f"{spec.n}of{spec.m}-sparsity", *_codecs.codec_for(spec.values).tags(spec.values)]

    def information_bits(self, shape, spec: NMSpec) -> float:
        rows, cols = matrix_shape(shape)
        groups = rows * _groups(cols, spec.m)
        kept_shape = (rows, _groups(cols, spec.m) * spec.n)
        return groups * math.log2(math.comb(spec.m, spec.n)) + _codecs.codec_for(spec.values).information_bits(
            kept_shape, spec.values
        )

    def int_grid(self, tensors, spec: NMSpec, rows: int, cols: int) -> IntGrid | None:
        """The kept values sit on the value codec's grid: scatter them back to their columns."""
        n, m = spec.n, spec.m
        groups = _groups(cols, m)
        values = {k: v for k, v in tensors.items() if k != "nm_codes"}
        kept_grid = _codecs.codec_for(spec.values).int_grid(values, spec.values, rows, groups * n)
        if kept_grid is None:
            return None
        kept_group, _ = group_count(groups * n, getattr(spec.values, "group_size", None))
        if kept_group % n:  # a group of kept values would split an N:M group: no per-column scale
            return None
        codes = _checked(unpack_bits(tensors["nm_codes"], pattern_bits(n, m), rows * groups), n, m)
        q = torch.zeros(rows * groups, m, dtype=torch.int8, device=codes.device)
        q.scatter_(1, kept_positions(codes, n, m), kept_grid.q.reshape(rows * groups, n))
        q = q.view(rows, groups * m)[:, :cols]
        return IntGrid(q=q.contiguous(), scale=kept_grid.scale, bounds=grid_bounds(cols, kept_group // n * m))

    def fake(self, spec: NMSpec, weight, options: FakeOptions) -> NMFake:
        return NMFake(spec, weight, options)
