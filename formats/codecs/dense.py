"""Dense codec: the values themselves in a float dtype.

Stored tensors:
    values  (the weight's shape) in `dtype`
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .base import (
    DTYPES,
    Codec,
    FakeOptions,
    FloatDType,
    SpecBase,
    TensorLayout,
    as_matrix,
    register,
    round_to_dtype,
    stored,
)


class DenseSpec(SpecBase):
    """Plain values in a float dtype (used for N:M kept values, Kronecker factors, or a module
    the recipe only casts)."""

    codec: Literal["dense"] = "dense"
    dtype: FloatDType = "float16"

    def describe(self) -> str:
        return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[self.dtype]


class DenseFake(nn.Module):
    """Plain values stored in a float dtype: rounded to it, gradient straight through."""

    def __init__(self, spec: DenseSpec):
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return stored(w, self.spec.dtype)


@register
class Dense(Codec):
    spec = DenseSpec

    def encode(self, weight, spec: DenseSpec, scale=None) -> dict[str, torch.Tensor]:
        as_matrix(weight)  # same checks as every codec: non-empty, floating point, finite
        # a copy (never a view of the caller's tensor), refusing values the dtype cannot hold
        return {"values": round_to_dtype(weight.detach(), spec.dtype).clone(memory_format=torch.contiguous_format)}

    def decode(self, tensors, spec: DenseSpec, shape) -> torch.Tensor:
        return tensors["values"].to(torch.float32).reshape(shape)

    def decode_rows(self, tensors, spec: DenseSpec, shape, rows: torch.Tensor) -> torch.Tensor:
        return tensors["values"][rows].to(torch.float32)

    def layout(self, shape, spec: DenseSpec) -> dict[str, TensorLayout]:
        return {"values": TensorLayout(tuple(shape), DTYPES[spec.dtype])}

    def value_bits(self, spec: DenseSpec) -> float:
        return float(DTYPES[spec.dtype].itemsize * 8)

    def tags(self, spec: DenseSpec) -> list[str]:
        return []  # plain floats: no compression method to name

    def information_bits(self, shape, spec: DenseSpec) -> float:
        return float(math.prod(shape) * DTYPES[spec.dtype].itemsize * 8)

    def fake(self, spec: DenseSpec, weight, options: FakeOptions) -> DenseFake:
        return DenseFake(spec)
