"""Codecs: exact, vectorized float-tensor <-> small-tensor transforms.

    encode(weight, spec) -> dict[str, Tensor]      keys are suffixes: '<module>.weight_<key>'
    decode(tensors, spec, shape) -> Tensor          float32, in the original shape
    decode_rows(tensors, spec, shape, rows)         float32, only the given rows (embedding lookups),
                                                    reading only the bytes those rows occupy
    layout(shape, spec) -> dict[str, TensorLayout]  what encode produces, without encoding
    nbytes(shape, spec) -> int                      bytes on disk, from the layout

Composite codecs (N:M, Kronecker) store their values through a child codec; the child's keys
keep their names (N:M: 'packed', 'scale', ...) or gain a prefix (Kronecker: 'kron_a_values').

Each codec is one `Codec` subclass in one module of this package, registered with `@register` (base.py):
every module here is imported below, and the spec unions recipes and manifests parse (`CodecSpec`, and
`ValueSpec` for what N:M and Kronecker store their values with) are built from what registered.
README's Develop section walks through adding one."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Union

import torch
from pydantic import Field

from ..errors import CodecError
from ..memory import release_freed_memory
from .base import (
    BlockCodes,
    Codec,
    FakeOptions,
    IntGrid,
    Shape,
    SpecBase,
    TensorLayout,
    as_matrix,
    codec_for,
    fake_for,
    register,
    registered,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

# The tags in the order recipes and manifests list them: the codecs that store values first, then those that
# store their values through one of them (N:M, Kronecker), each group by name.
CODEC_NAMES: tuple[str, ...] = tuple(sorted(registered(), key=lambda name: (not registered()[name].value_codec, name)))
VALUE_CODEC_NAMES: tuple[str, ...] = tuple(name for name in CODEC_NAMES if registered()[name].value_codec)


def _union(names: tuple[str, ...]):
    members = tuple(registered()[name].spec for name in names)
    return Annotated[Union[members], Field(discriminator="codec")]  # noqa: UP007 - a union built at run time


if TYPE_CHECKING:
    CodecSpec = SpecBase
    ValueSpec = SpecBase
else:
    CodecSpec = _union(CODEC_NAMES)
    ValueSpec = _union(VALUE_CODEC_NAMES)
    for _codec in registered().values():  # composite specs name ValueSpec, which exists only now
        if not _codec.spec.__pydantic_complete__:
            _codec.spec.model_rebuild(_types_namespace={"ValueSpec": ValueSpec})


# Codecs that encode each row on its own take a large matrix a block of rows at a time, so the float and int64
# temporaries of encoding stay a few MB however large the table (a 30522-row embedding is 23M values on
# BERT-base). The blocks join exactly: a block's rows are a multiple of the codec's `row_unit` (its packed
# streams end on a byte there), and every other tensor a codec stores has one row per weight row (or per block
# of `group_rows`).
ROW_BLOCK_VALUES = 1 << 18


def _row_unit(spec: CodecSpec) -> int | None:
    """The multiple of rows a block must have, or None when the codec does not encode rows on their own."""
    return codec_for(spec).row_unit(spec)


def encode(weight: torch.Tensor, spec: CodecSpec, *, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`scale`: for int-N on a symmetric zero-preserving grid (alone or as N:M values), the group scales to
    store instead of the ones the absmax rule picks, when a post-training method chose them (GPTQ)."""
    if scale is not None and not codec_for(spec).takes_scale:
        raise CodecError(f"{spec.describe()} takes no given scales")
    unit = _row_unit(spec)
    if unit is None or weight.numel() <= ROW_BLOCK_VALUES or weight.dim() < 2:
        return _encode(weight, spec, scale)
    w = as_matrix(weight)
    step = max(unit, ROW_BLOCK_VALUES // w.shape[1] // unit * unit)
    pieces = []
    for start in range(0, w.shape[0], step):
        pieces.append(_encode(w[start : start + step], spec, None if scale is None else scale[start : start + step]))
        release_freed_memory()  # the block's temporaries, not left on the heap for the next one to add to
    return {key: torch.cat([piece[key] for piece in pieces]) for key in pieces[0]}


def _encode(weight: torch.Tensor, spec: CodecSpec, scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
    return codec_for(spec).encode(weight, spec, scale)


def layout(shape: Shape, spec: CodecSpec) -> dict[str, TensorLayout]:
    return codec_for(spec).layout(tuple(shape), spec)


def nbytes(shape: Shape, spec: CodecSpec) -> int:
    return sum(t.nbytes for t in layout(shape, spec).values())


def check_tensors(tensors: Mapping[str, torch.Tensor], shape: Shape, spec: CodecSpec) -> None:
    """Raise CodecError unless `tensors` are exactly what `layout` says encode produces."""
    expected = layout(shape, spec)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CodecError(f"tensors for {spec.describe()} do not match: missing {missing}, unexpected {extra}")
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != want.shape or got.dtype != want.dtype:
            raise CodecError(f"tensor '{key}' is {tuple(got.shape)} {got.dtype}, expected {want.shape} {want.dtype}")


def decode(tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape) -> torch.Tensor:
    """Decode after checking the tensors against the layout; returns float32 in `shape`."""
    check_tensors(tensors, shape, spec)
    return decode_checked(tensors, spec, tuple(shape))


def decode_checked(tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape) -> torch.Tensor:
    return codec_for(spec).decode(tensors, spec, shape)


def decode_rows(tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape, rows: torch.Tensor) -> torch.Tensor:
    """Rows `rows` of the decoded weight, equal to decode(...)[rows], reading only what those rows store
    (an embedding lookup in packed and kernel mode: memory follows the compressed table, not the dense one)."""
    return codec_for(spec).decode_rows(tensors, spec, tuple(shape), rows)


def int_grid(tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape) -> IntGrid | None:
    """The exact integer view of a stored 2-D weight (kernel mode's int8 matmuls), or None when its codec has none."""
    if len(shape) != 2:
        return None
    return codec_for(spec).int_grid(tensors, spec, *shape)


def block_codes(
    tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape, bits_allowed: tuple[int, ...] | None = None
) -> BlockCodes | None:
    """A stored 2-D weight as the block codes the ONNX export writes (`Codec.block_codes`), or None when its codec's
    values have none; `bits_allowed` narrows the code widths (default: every width ONNX Runtime takes)."""
    if len(shape) != 2:
        return None
    codec = codec_for(spec)
    if bits_allowed is None:
        return codec.block_codes(tensors, spec, *shape)
    return codec.block_codes(tensors, spec, *shape, bits_allowed=bits_allowed)


__all__ = [
    "CODEC_NAMES",
    "VALUE_CODEC_NAMES",
    "BlockCodes",
    "Codec",
    "CodecError",
    "CodecSpec",
    "FakeOptions",
    "IntGrid",
    "SpecBase",
    "TensorLayout",
    "ValueSpec",
    "block_codes",
    "check_tensors",
    "codec_for",
    "decode",
    "decode_checked",
    "decode_rows",
    "encode",
    "fake_for",
    "int_grid",
    "layout",
    "nbytes",
    "register",
    "registered",
]
