"""Ternary codec: w ~ alpha * t with t in {-1, 0, +1}, trits packed five to a byte.

Stored tensors:
    packed  uint8 (ceil(numel/5),)  trit t+1 (0: -alpha, 1: zero, 2: +alpha), in trit order (below)
    scale   float16 (rows, groups)  alpha per group

Per group (real elements only): delta = threshold * mean|w|; t = +1 where w > delta, -1 where
w < -delta, else 0; alpha = mean |w| over the nonzero t (0 when there are none). Zero stays zero.

Trit order: five trits ``t0..t4`` (each 0, 1 or 2) make one byte ``t0 + 3*t1 + 9*t2 + 27*t3 + 81*t4``;
trit ``i`` of the stream goes to byte ``i // 5``. The last byte is padded with trit 0.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from pydantic import Field

from ..bitpack import gather_rows
from ..errors import CodecError
from .base import (
    Codec,
    FakeOptions,
    FloatDType,
    GroupFake,
    IntGrid,
    SpecBase,
    TensorLayout,
    as_matrix,
    from_groups,
    grid_bounds,
    group_count,
    group_sizes,
    group_text,
    matrix_shape,
    register,
    round_to_dtype,
    row_positions,
    scale_groups_,
    scale_layout,
    side_bits,
    to_groups,
)


class TernarySpec(SpecBase):
    """w ~ alpha * t, t in {-1, 0, +1}: |w| <= threshold * mean|w| gives 0; alpha is the mean |w|
    of the kept (nonzero) values of the group. Trits are packed 5 to a byte (1.6 bits/weight)."""

    codec: Literal["ternary"] = "ternary"
    group_size: int | None = Field(default=128, ge=1)
    threshold: float = Field(default=0.7, ge=0.0)
    scale_dtype: FloatDType = "float16"

    def describe(self) -> str:
        return f"ternary {group_text(self.group_size)}"


# ------------------------------------------------------------------------------------------------ trit packing

TRITS_PER_BYTE = 5
_POW3 = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32)
TRIT_CHUNK = TRITS_PER_BYTE << 18  # trits packed per piece: whole bytes, and temporaries of a few MB


def trit_nbytes(count: int) -> int:
    return math.ceil(count / TRITS_PER_BYTE)


def pack_trits(trits: torch.Tensor) -> torch.Tensor:
    """Pack values in {0, 1, 2} five to a byte; see the module doc for order."""
    if trits.is_floating_point():
        raise CodecError(f"trits must be integers, got {trits.dtype}")
    flat = trits.reshape(-1)
    n = flat.numel()
    if n and (int(flat.min()) < 0 or int(flat.max()) > 2):
        raise CodecError("trits must be 0, 1 or 2")
    out = torch.empty(trit_nbytes(n), dtype=torch.uint8, device=flat.device)
    for start in range(0, n, TRIT_CHUNK):
        piece = flat[start : start + TRIT_CHUNK].to(torch.int32)
        nbytes = trit_nbytes(piece.numel())
        padded = torch.zeros(nbytes * TRITS_PER_BYTE, dtype=torch.int32, device=flat.device)
        padded[: piece.numel()] = piece
        first = start // TRITS_PER_BYTE
        out[first : first + nbytes] = (padded.view(nbytes, TRITS_PER_BYTE) * _POW3.to(flat.device)).sum(dim=1)
    return out


def unpack_trits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_trits`: the first ``count`` trits as int32."""
    return unpack_trits_table(packed, count, torch.arange(3, dtype=torch.int32))


def unpack_trits_table(packed: torch.Tensor, count: int, table: torch.Tensor) -> torch.Tensor:
    """``table[unpack_trits(packed, count)]`` for a 3-entry ``table`` (any dtype), gathered a byte at a time:
    each byte value's five entries come from a (243, 5) table, so nothing is divided per trit and the result is
    bit for bit the table's values."""
    need = trit_nbytes(count)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != need:
        raise CodecError(f"packed trits must be a 1-D uint8 tensor of {need} bytes, got {tuple(packed.shape)}")
    if packed.numel() and int(packed.max()) >= 3**TRITS_PER_BYTE:
        raise CodecError("packed trit byte out of range (>= 243)")
    return gather_rows(table.to(packed.device)[_byte_trits().to(packed.device)], packed).view(-1)[:count]


@functools.cache
def _byte_trits() -> torch.Tensor:
    """(243, 5) int64: the trits t0..t4 of each valid byte value."""
    return (torch.arange(3**TRITS_PER_BYTE).unsqueeze(1) // _POW3) % 3


def unpack_trits_at(packed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The trits at positions `index` (any shape) of a stream packed by :func:`pack_trits`, as int32."""
    data = packed[index.to(torch.int64) // TRITS_PER_BYTE].to(torch.int32)
    if data.numel() and int(data.max()) >= 3**TRITS_PER_BYTE:
        raise CodecError("packed trit byte out of range (>= 243)")
    return (data // _POW3.to(data.device)[index.to(torch.int64) % TRITS_PER_BYTE]) % 3


# ----------------------------------------------------------------------------------------------------- codec


def _ternary(groups: torch.Tensor, sizes: torch.Tensor, spec: TernarySpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(t in {-1, 0, 1} as int32, alpha per group rounded to its storage dtype) of (rows, groups, g) values:
    the one rule encode and the training fake share."""
    mag = groups.abs()
    delta = (spec.threshold * mag.sum(dim=-1) / sizes).unsqueeze(-1)
    t = (groups > delta).to(torch.int32) - (groups < -delta).to(torch.int32)
    kept = t != 0
    alpha = (mag * kept).sum(dim=-1) / kept.sum(dim=-1).clamp(min=1)
    return t, round_to_dtype(alpha, spec.scale_dtype)


_LEVELS = torch.tensor([-1.0, 0.0, 1.0])  # stored trit -> t, float32


def _values(t: torch.Tensor, scale: torch.Tensor, spec: TernarySpec) -> torch.Tensor:
    """(rows, cols) float32 t (a fresh tensor: scaled in place) times each group's alpha."""
    return scale_groups_(t, scale, spec.group_size)


def _fake_values(groups: torch.Tensor, sizes: torch.Tensor, spec: TernarySpec) -> torch.Tensor:
    t, alpha = _ternary(groups, sizes, spec)
    return t * alpha.float().unsqueeze(-1)


@register
class Ternary(Codec):
    spec = TernarySpec

    def encode(self, weight, spec: TernarySpec, scale=None) -> dict[str, torch.Tensor]:
        w = as_matrix(weight)
        t, alpha = _ternary(to_groups(w, spec.group_size), group_sizes(w.shape[1], spec.group_size, w.device), spec)
        return {"packed": pack_trits(from_groups(t + 1, w.shape[1])), "scale": alpha}

    def decode(self, tensors, spec: TernarySpec, shape) -> torch.Tensor:
        rows, cols = matrix_shape(shape)
        t = unpack_trits_table(tensors["packed"], rows * cols, _LEVELS).view(rows, cols)
        return _values(t, tensors["scale"], spec).reshape(shape)

    def decode_rows(self, tensors, spec: TernarySpec, shape, rows: torch.Tensor) -> torch.Tensor:
        """Only the trits of the given rows (a row seldom starts on a byte: 5 trits share each one)."""
        _, cols = matrix_shape(shape)
        trits = unpack_trits_at(tensors["packed"], row_positions(rows, cols))
        return _values(_LEVELS.to(trits.device)[trits], tensors["scale"][rows], spec)

    def layout(self, shape, spec: TernarySpec) -> dict[str, TensorLayout]:
        rows, cols = matrix_shape(shape)
        return {
            "packed": TensorLayout((trit_nbytes(rows * cols),), torch.uint8),
            "scale": scale_layout(shape, spec.group_size, spec.scale_dtype),
        }

    def row_unit(self, spec: TernarySpec) -> int:
        return TRITS_PER_BYTE  # a block of rows ends its trit stream on a byte

    def value_bits(self, spec: TernarySpec) -> float:
        return math.log2(3)

    def tags(self, spec: TernarySpec) -> list[str]:
        return ["ternary"]

    def information_bits(self, shape, spec: TernarySpec) -> float:
        rows, cols = matrix_shape(shape)
        return rows * cols * math.log2(3) + side_bits(self.layout(shape, spec))

    def int_grid(self, tensors, spec: TernarySpec, rows: int, cols: int) -> IntGrid:
        q = unpack_trits_table(tensors["packed"], rows * cols, _LEVELS.to(torch.int8)).view(rows, cols)
        g, _ = group_count(cols, spec.group_size)
        return IntGrid(q=q.to(torch.int8), scale=tensors["scale"].to(torch.float32), bounds=grid_bounds(cols, g))

    def fake(self, spec: TernarySpec, weight, options: FakeOptions) -> GroupFake:
        """Forward: exactly the stored {-alpha, 0, alpha}; the latent weight's gradient passes straight through,
        so a weight may leave or join the zeros at any step (XTC)."""
        return GroupFake(spec, lambda x, sizes: _fake_values(x, sizes, spec))
