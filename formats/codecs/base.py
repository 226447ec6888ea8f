"""Helpers every codec shares: the 2-D view of a weight, row groups, dtypes, tensor layouts.

A weight of any shape is seen as a matrix of `shape[0]` rows (output channels) and
`prod(shape[1:])` columns; a 1-D tensor is one row. Groups run along a row; a row whose
length is not a multiple of the group size ends with a shorter group, which is zero-padded
while its statistics are computed and never stored."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CodecError

Shape = tuple[int, ...]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class TensorLayout:
    """Shape and dtype of one stored tensor; `nbytes` is what it costs on disk."""

    shape: Shape
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def matrix_shape(shape: Shape) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The weight as a float32 (rows, cols) matrix, after checking it can be encoded."""
    if weight.numel() == 0:
        raise CodecError("cannot encode an empty tensor")
    if not weight.is_floating_point():
        raise CodecError(f"only floating-point weights can be encoded, got {weight.dtype}")
    w = weight.detach().to(torch.float32).reshape(matrix_shape(tuple(weight.shape)))
    # checked a block of rows at a time: isfinite over a whole embedding table costs more than the table
    step = max(1, (1 << 18) // w.shape[1])
    if not all(bool(torch.isfinite(w[start:start + step]).all()) for start in range(0, w.shape[0], step)):
        raise CodecError("weight contains NaN or infinity")
    return w


def group_count(cols: int, group_size: int | None) -> tuple[int, int]:
    """(group size actually used, groups per row); None, or a size beyond the row, means one group per row."""
    g = cols if group_size is None else min(group_size, cols)
    return g, math.ceil(cols / g)


def to_groups(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(rows, cols) -> (rows, groups, g), zero-padding the last group of each row."""
    rows, cols = w.shape
    g, n = group_count(cols, group_size)
    return F.pad(w, (0, n * g - cols)).view(rows, n, g)


def from_groups(x: torch.Tensor, cols: int) -> torch.Tensor:
    rows = x.shape[0]
    return x.reshape(rows, -1)[:, :cols]


def scale_layout(shape: Shape, group_size: int | None, dtype_name: str) -> TensorLayout:
    """One scale per group of each row."""
    rows, cols = matrix_shape(shape)
    return TensorLayout((rows, group_count(cols, group_size)[1]), DTYPES[dtype_name])


def group_sizes(cols: int, group_size: int | None, device: torch.device | None = None) -> torch.Tensor:
    """Number of real (unpadded) elements in each group of a row, shape (groups,)."""
    g, n = group_count(cols, group_size)
    sizes = torch.full((n,), g, dtype=torch.float32, device=device)
    sizes[-1] = cols - (n - 1) * g
    return sizes


def round_to_dtype(values: torch.Tensor, dtype_name: str) -> torch.Tensor:
    """Round values, scales or centroids to their storage dtype, refusing any that overflow it."""
    stored = values.to(DTYPES[dtype_name])
    if not torch.isfinite(stored).all():
        raise CodecError(
            f"a value does not fit in {dtype_name} (weights too large)",
            hint="store it in float32 (the codec's dtype / scale_dtype / centroid_dtype in the recipe)",
        )
    return stored


def row_positions(rows: torch.Tensor, cols: int) -> torch.Tensor:
    """(len(rows), cols) positions in a row-major stream of the elements of the given rows."""
    return rows.to(torch.int64).unsqueeze(1) * cols + torch.arange(cols, device=rows.device)


def row_codes(packed: torch.Tensor, bits: int, total_rows: int, cols: int, rows: torch.Tensor) -> torch.Tensor:
    """(len(rows), cols) int32 codes of the given rows of a (total_rows, cols) matrix of `bits`-wide codes
    packed by `bitpack.pack_bits`: whole bytes when every row starts on a byte boundary, else code by code."""
    from ..bitpack import unpack_bits, unpack_bits_at

    if (cols * bits) % 8 == 0:
        picked = packed.view(total_rows, cols * bits // 8)[rows].reshape(-1)
        return unpack_bits(picked, bits, len(rows) * cols).view(len(rows), cols)
    return unpack_bits_at(packed, bits, row_positions(rows, cols))


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if not prefix:
        return tensors
    return {f"{prefix}_{k}": v for k, v in tensors.items()}


def layout_with_prefix(layout: dict[str, TensorLayout], prefix: str) -> dict[str, TensorLayout]:
    if not prefix:
        return layout
    return {f"{prefix}_{k}": v for k, v in layout.items()}


def strip_prefix(tensors, prefix: str) -> dict[str, torch.Tensor]:
    if not prefix:
        return dict(tensors)
    start = prefix + "_"
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}
