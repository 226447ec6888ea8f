"""What every codec shares: the `Codec` interface and its registry, the 2-D view of a weight, row groups,
dtypes, tensor layouts, and the straight-through helpers of training-time fakes.

A weight of any shape is seen as a matrix of `shape[0]` rows (output channels) and
`prod(shape[1:])` columns; a 1-D tensor is one row. Groups run along a row; a row whose
length is not a multiple of the group size ends with a shorter group, which is zero-padded
while its statistics are computed and never stored."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..errors import CodecError

Shape = tuple[int, ...]
Tensors = Mapping[str, torch.Tensor]
FloatDType = Literal["float32", "float16", "bfloat16"]

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
    if not all(bool(torch.isfinite(w[start : start + step]).all()) for start in range(0, w.shape[0], step)):
        raise CodecError("weight contains NaN or infinity")
    return w


def group_count(cols: int, group_size: int | None) -> tuple[int, int]:
    """(group size actually used, groups per row); None, or a size beyond the row, means one group per row."""
    g = cols if group_size is None else min(group_size, cols)
    return g, math.ceil(cols / g)


def group_text(group_size: int | None) -> str:
    """How `describe` names a group size: per-row, or g128."""
    return "per-row" if group_size is None else f"g{group_size}"


def to_groups(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(rows, cols) -> (rows, groups, g), zero-padding the last group of each row."""
    rows, cols = w.shape
    g, n = group_count(cols, group_size)
    return F.pad(w, (0, n * g - cols)).view(rows, n, g)


def from_groups(x: torch.Tensor, cols: int) -> torch.Tensor:
    rows = x.shape[0]
    return x.reshape(rows, -1)[:, :cols]


def scale_groups_(x: torch.Tensor, scale: torch.Tensor, group_size: int | None, zero: torch.Tensor | None = None):
    """(x - zero) * scale for a (rows, cols) float32 matrix and its (rows, groups) scales (and zero points), the
    arithmetic of `to_groups(x) ... from_groups` element for element (so bit for bit), done in place on `x` when
    its groups tile its rows: no padded copy. `x` must be a fresh tensor the caller owns."""
    rows, cols = x.shape
    g, n = group_count(cols, group_size)
    grouped = x.view(rows, n, g) if n * g == cols and x.is_contiguous() else to_groups(x, group_size)
    if zero is not None:
        grouped = grouped.sub_(zero.to(torch.float32).unsqueeze(-1))
    grouped = grouped.mul_(scale.to(torch.float32).unsqueeze(-1))
    return from_groups(grouped, cols)


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
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


# ----------------------------------------------------------------------------------------------- the interface


class SpecBase(BaseModel):
    """A codec's parameters (pydantic). Its `codec` field, a Literal, is the tag recipes and manifests use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: str

    def describe(self) -> str:  # pragma: no cover - every codec's spec overrides
        raise NotImplementedError


@dataclass
class IntGrid:
    """W[:, a:b] == q[:, a:b] * scale[:, g] exactly, for the g-th column range (a, b) in `bounds`: the integer
    view of a stored weight that kernel mode multiplies with int8 matmuls."""

    q: torch.Tensor  # int8 (rows, cols)
    scale: torch.Tensor  # float32 (rows, groups)
    bounds: list[tuple[int, int]]


def grid_bounds(cols: int, group: int) -> list[tuple[int, int]]:
    return [(a, min(a + group, cols)) for a in range(0, cols, group)]


@dataclass
class BlockCodes:
    """W (rows, cols) as unsigned `bits`-bit codes with one scale per `group` columns of a row:
    W[r, c] == (codes[r, c] - 2**(bits - 1)) * scale[r, c // group], exactly. `block` (a power of two, >= 16)
    divides `group`: ONNX Runtime's block-quantized operators (MatMulNBits, GatherBlockQuantized) take one
    scale per block, so the ONNX export (zoo/export.py) repeats a group's scale over its group // block blocks
    when the session starts, and the file keeps one per group."""

    codes: torch.Tensor  # uint8 (rows, cols), each < 2**bits
    scale: torch.Tensor  # float32 (rows, ceil(cols / group))
    bits: int  # 2, 4 or 8
    block: int
    group: int  # a multiple of block


EXPORT_BITS = (2, 4, 8)  # the widths ONNX Runtime's block-quantized operators take
MIN_EXPORT_BLOCK = 16


def block_codes(grid: IntGrid, bits_allowed: tuple[int, ...] = EXPORT_BITS) -> BlockCodes | None:
    """The integer grid as block codes, or None when no layout fits: the column groups must be of one width
    (the last may be shorter) with a power-of-two divisor of at least 16, the block (at most 256); the codes
    take the narrowest width in `bits_allowed` that holds every q."""
    if grid.q.numel() == 0:
        return None
    widths = {b - a for a, b in grid.bounds[:-1]}
    width = widths.pop() if widths else grid.bounds[-1][1] - grid.bounds[-1][0]
    if widths or grid.bounds[-1][1] - grid.bounds[-1][0] > width:
        return None
    block = width & -width  # the largest power of two dividing the group width
    if block < MIN_EXPORT_BLOCK:
        return None
    block = min(block, 256)  # wider blocks gain nothing in bytes (scales are 1/64 of 4-bit codes already)
    lo, hi = int(grid.q.min()), int(grid.q.max())
    bits = next((b for b in sorted(bits_allowed) if -(1 << (b - 1)) <= lo and hi < 1 << (b - 1)), None)
    if bits is None:
        return None
    codes = (grid.q.to(torch.int16) + (1 << (bits - 1))).to(torch.uint8)
    scale = grid.scale.to(torch.float32).contiguous()
    return BlockCodes(codes=codes, scale=scale, bits=bits, block=block, group=width)


@dataclass(frozen=True)
class FakeOptions:
    """How a training-time fake treats int grids: `clip` "absmax" or "learned" (LSQ), and the percentile of
    |w| a learned clip starts from."""

    clip: str = "absmax"
    percentile: float = 100.0


class Codec:
    """One way of storing a weight, and everything each layer of zoo needs to know of it: the format's
    encode/decode/layout (formats), its integer grid for kernel mode (loaders), its value bits and card tags
    (cards), its training-time fake (zoo.methods) and its information bound (bench). A codec is one subclass
    in one file of this package, registered with `@register`; everything else asks `codec_for(spec)`."""

    spec: ClassVar[type[SpecBase]]  # its parameters; `spec.codec`'s Literal value is the codec's name
    value_codec: ClassVar[bool] = True  # may store N:M's kept values and Kronecker's factors
    takes_scale: ClassVar[bool] = False  # encode accepts group scales chosen by a post-training method (GPTQ)

    @classmethod
    def name(cls) -> str:
        return cls.spec.model_fields["codec"].default

    # --- the format
    def encode(self, weight: torch.Tensor, spec: Any, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, tensors: Tensors, spec: Any, shape: Shape) -> torch.Tensor:
        """float32 in `shape`, from tensors already checked against `layout`."""
        raise NotImplementedError

    def decode_rows(self, tensors: Tensors, spec: Any, shape: Shape, rows: torch.Tensor) -> torch.Tensor:
        """decode(...)[rows] of the (rows, cols) matrix, reading only what those rows store."""
        raise NotImplementedError

    def layout(self, shape: Shape, spec: Any) -> dict[str, TensorLayout]:
        raise NotImplementedError

    def row_unit(self, spec: Any) -> int | None:
        """The multiple of rows a block must have when a large matrix is encoded a block of rows at a time, or
        None when rows are not encoded on their own."""
        return None

    # --- cards and bench
    def value_bits(self, spec: Any) -> float:
        """Bits per stored value, before sparsity: 4 for int4, log2 3 for ternary."""
        raise NotImplementedError

    def sparsity(self, spec: Any) -> float:
        """The fraction of weights that are zero by construction (N:M's 1 - N/M)."""
        return 0.0

    def tags(self, spec: Any) -> list[str]:
        """Short names of the methods a module stored this way uses (model-card tags)."""
        raise NotImplementedError

    def information_bits(self, shape: Shape, spec: Any) -> float:
        """The fewest bits that hold what the codec stores (log2 of its distinct payloads), plus its side
        information at the size it is stored in: the bound the format's overhead is measured against."""
        raise NotImplementedError

    # --- kernels and training
    factored: ClassVar[bool] = False  # stores factors that kernel mode multiplies by directly, never W (`factors`)

    def factors(self, tensors: Tensors, spec: Any, shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded factors of a factored codec (Kronecker's A and B), for kernels that apply them to x."""
        raise CodecError(f"{spec.describe()} stores no factors")

    def factor_linear(
        self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """x @ W.T + bias for the weight W these factors make, without building W (kernel mode and every mode of
        a factored codec)."""
        raise CodecError(f"{type(self).__name__} stores no factors")

    def factor_rows(self, a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Rows `rows` of the weight these factors make (an embedding lookup), without building W."""
        raise CodecError(f"{type(self).__name__} stores no factors")

    def sparsity_pattern(self, spec: Any) -> tuple[int, int] | None:
        """(N, M) when the stored weight keeps N of every M consecutive weights of a row (semi-structured
        sparse kernels serve 2:4), else None."""
        return None

    def int_grid(self, tensors: Tensors, spec: Any, rows: int, cols: int) -> IntGrid | None:
        """The exact integer view of a stored (rows, cols) matrix, or None when its values are on no int8 grid."""
        return None

    def block_codes(
        self, tensors: Tensors, spec: Any, rows: int, cols: int, bits_allowed: tuple[int, ...] = EXPORT_BITS
    ) -> BlockCodes | None:
        """The ONNX export's view of a stored (rows, cols) matrix: block codes (`BlockCodes`) that give back exactly
        the stored values, or None when this codec's values have none (the export then refuses the module). By
        default, the integer grid's (`int_grid`) when its groups and values fit a block layout."""
        grid = self.int_grid(tensors, spec, rows, cols)
        return None if grid is None else block_codes(grid, bits_allowed)

    def fake(self, spec: Any, weight: torch.Tensor, options: FakeOptions) -> nn.Module:
        """The training-time module whose forward gives exactly the weight this codec stores for `weight`."""
        return RoundTripFake(spec)


_CODECS: dict[str, Codec] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make a codec known to every layer (its module need only sit in formats/codecs/)."""
    name = cls.name()
    if name in _CODECS and type(_CODECS[name]) is not cls:
        raise CodecError(f"two codecs are named {name!r}: {type(_CODECS[name]).__name__} and {cls.__name__}")
    _CODECS[name] = cls()
    return cls


def registered() -> dict[str, Codec]:
    """Every codec, by name."""
    return dict(_CODECS)


def codec_for(spec: SpecBase) -> Codec:
    try:
        return _CODECS[spec.codec]
    except KeyError:
        raise CodecError(f"unknown codec {spec.codec!r}", hint=f"known: {', '.join(sorted(_CODECS))}") from None


def fake_for(spec: SpecBase, weight: torch.Tensor, options: FakeOptions = FakeOptions()) -> nn.Module:
    return codec_for(spec).fake(spec, weight, options)


def side_bits(parts: Mapping[str, TensorLayout], keys: tuple[str, ...] = ("scale", "zero_point", "codebook")) -> float:
    """Bits of a layout's side information (scales, zero points, centroids), as stored."""
    return float(sum(part.nbytes * 8 for key, part in parts.items() if key in keys))


# --------------------------------------------------------------------------- training-time (straight-through)


def straight_through(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` in the forward pass, identity gradient to `x` in the backward pass."""
    return x + (value - x).detach()


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return straight_through(x, torch.round(x))


def stored(x: torch.Tensor, dtype_name: str) -> torch.Tensor:
    """x rounded to a storage dtype (as a codec stores scales), gradient straight through."""
    return straight_through(x, x.to(DTYPES[dtype_name]).to(x.dtype))


class RoundTripFake(nn.Module):
    """Any codec: forward decode(encode(w)), gradient straight through. Slower; for codecs with no own fake."""

    def __init__(self, spec: SpecBase):
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codec = codec_for(self.spec)
        restored = codec.decode(codec.encode(w, self.spec), self.spec, tuple(w.shape))
        return straight_through(w, restored.to(w.dtype))


class GroupFake(nn.Module):
    """A fake for codecs that quantize each group of a row on its own: `values(groups, sizes)` (the codec's own
    arithmetic, on detached (rows, groups, g) values and each group's real size) gives the stored values."""

    def __init__(self, spec: Any, values: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.spec = spec
        self.values = values

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        matrix = w.reshape(w.shape[0], -1).float()
        x = to_groups(matrix, self.spec.group_size)
        q = straight_through(x, self.values(x.detach(), group_sizes(matrix.shape[1], self.spec.group_size, w.device)))
        return from_groups(q, matrix.shape[1]).reshape(w.shape).to(w.dtype)
