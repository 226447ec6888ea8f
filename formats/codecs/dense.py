"""Dense codec: the values themselves in a float dtype.

Stored tensors:
    values  (the weight's shape) in `dtype`
"""

from __future__ import annotations

import torch

from ..spec import DenseSpec
from .base import DTYPES, TensorLayout, as_matrix, round_to_dtype


def encode(weight: torch.Tensor, spec: DenseSpec) -> dict[str, torch.Tensor]:
    as_matrix(weight)  # same checks as every codec: non-empty, floating point, finite
    # a copy (never a view of the caller's tensor), refusing values the dtype cannot hold
    return {"values": round_to_dtype(weight.detach(), spec.dtype).clone(memory_format=torch.contiguous_format)}


def decode(tensors, spec: DenseSpec, shape) -> torch.Tensor:
    return tensors["values"].to(torch.float32).reshape(shape)


def decode_rows(tensors, spec: DenseSpec, shape, rows: torch.Tensor) -> torch.Tensor:
    return tensors["values"][rows].to(torch.float32)


def layout(shape, spec: DenseSpec) -> dict[str, TensorLayout]:
    return {"values": TensorLayout(tuple(shape), DTYPES[spec.dtype])}
