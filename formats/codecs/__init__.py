"""Codecs: exact, vectorized float-tensor <-> small-tensor transforms.

    encode(weight, spec) -> dict[str, Tensor]      keys are suffixes: '<module>.weight_<key>'
    decode(tensors, spec, shape) -> Tensor          float32, in the original shape
    decode_rows(tensors, spec, shape, rows)         float32, only the given rows (embedding lookups),
                                                    reading only the bytes those rows occupy
    layout(shape, spec) -> dict[str, TensorLayout]  what encode produces, without encoding
    nbytes(shape, spec) -> int                      bytes on disk, from the layout

Composite codecs (N:M, Kronecker) store their values through a child codec; the child's keys
keep their names (N:M: 'packed', 'scale', ...) or gain a prefix (Kronecker: 'kron_a_values')."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import CodecError
from ..spec import CodecSpec
from . import binary, codebook, dense, intn, kronecker, nm, ternary
from .base import Shape, TensorLayout

_IMPLS = {
    "int": intn,
    "binary": binary,
    "ternary": ternary,
    "codebook": codebook,
    "dense": dense,
    "nm": nm,
    "kronecker": kronecker,
}


def _impl(spec: CodecSpec):
    return _IMPLS[spec.codec]


def encode(weight: torch.Tensor, spec: CodecSpec, *, scale: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`scale`: for int-N on a symmetric zero-preserving grid (alone or as N:M values), the group scales to
    store instead of the ones the absmax rule picks, when a post-training method chose them (GPTQ)."""
    if scale is None:
        return _impl(spec).encode(weight, spec)
    if spec.codec not in ("int", "nm"):
        raise CodecError(f"{spec.describe()} takes no given scales")
    return _impl(spec).encode(weight, spec, scale)


def layout(shape: Shape, spec: CodecSpec) -> dict[str, TensorLayout]:
    return _impl(spec).layout(tuple(shape), spec)


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
            raise CodecError(
                f"tensor '{key}' is {tuple(got.shape)} {got.dtype}, expected {want.shape} {want.dtype}"
            )


def decode(tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape) -> torch.Tensor:
    """Decode after checking the tensors against the layout; returns float32 in `shape`."""
    check_tensors(tensors, shape, spec)
    return decode_checked(tensors, spec, tuple(shape))


def decode_checked(tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape) -> torch.Tensor:
    return _impl(spec).decode(tensors, spec, shape)


def decode_rows(
    tensors: Mapping[str, torch.Tensor], spec: CodecSpec, shape: Shape, rows: torch.Tensor
) -> torch.Tensor:
    """Rows `rows` of the decoded weight, equal to decode(...)[rows], reading only what those rows store
    (an embedding lookup in packed and kernel mode: memory follows the compressed table, not the dense one)."""
    return _impl(spec).decode_rows(tensors, spec, tuple(shape), rows)


__all__ = [
    "CodecError",
    "TensorLayout",
    "check_tensors",
    "decode",
    "decode_checked",
    "decode_rows",
    "encode",
    "layout",
    "nbytes",
]
