"""Codec parameters as pydantic models. A codec chain is one `CodecSpec`, possibly nested
(N:M stores its kept values through a value codec; Kronecker stores its factors through one).

The same models appear in recipes (what to do) and in the manifest (what was done), so a
manifest entry is always a complete description of how to decode its tensors."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FloatDType = Literal["float32", "float16", "bfloat16"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


def _group(group_size: int | None) -> str:
    return "per-row" if group_size is None else f"g{group_size}"


class IntSpec(_Spec):
    """Integer codes of `bits` bits with one fp16 scale per group of `group_size` consecutive
    values of a row (None: one per row).

    symmetric + zero_preserving: narrow-range mid-tread grid q*s, q in [-(2^(b-1)-1), 2^(b-1)-1];
        0.0 encodes to q = 0 and decodes to exactly 0.0.
    symmetric, not zero_preserving: mid-rise grid (q+1/2)*s, q in [-2^(b-1), 2^(b-1)-1]; uses all
        2^b levels but has no zero.
    asymmetric: (u - z)*s with an integer zero point z per group; the range always covers 0, so 0.0
        is exact too.
    """

    codec: Literal["int"] = "int"
    bits: int = Field(ge=1, le=8)
    group_size: int | None = Field(default=128, ge=1)
    symmetric: bool = True
    zero_preserving: bool = True
    scale_dtype: FloatDType = "float16"

    @model_validator(mode="after")
    def _check(self) -> IntSpec:
        if self.symmetric and self.zero_preserving and self.bits < 2:
            raise ValueError("a symmetric zero-preserving grid needs bits >= 2 (use the binary codec for 1 bit)")
        if not self.symmetric and not self.zero_preserving:
            raise ValueError("asymmetric int is always zero-preserving; leave zero_preserving true")
        return self

    def describe(self) -> str:
        mode = ("sym" if self.zero_preserving else "sym-midrise") if self.symmetric else "asym"
        return f"int{self.bits} {_group(self.group_size)} {mode}"


class BinarySpec(_Spec):
    """Sign bits and one scale per group: w ~ alpha * sign(w), alpha = mean |w| of the group;
    w >= 0 (including -0.0) maps to +alpha."""

    codec: Literal["binary"] = "binary"
    group_size: int | None = Field(default=128, ge=1)
    scale_dtype: FloatDType = "float16"

    def describe(self) -> str:
        return f"binary {_group(self.group_size)}"


class TernarySpec(_Spec):
    """w ~ alpha * t, t in {-1, 0, +1}: |w| <= threshold * mean|w| gives 0; alpha is the mean |w|
    of the kept (nonzero) values of the group. Trits are packed 5 to a byte (1.6 bits/weight)."""

    codec: Literal["ternary"] = "ternary"
    group_size: int | None = Field(default=128, ge=1)
    threshold: float = Field(default=0.7, ge=0.0)
    scale_dtype: FloatDType = "float16"

    def describe(self) -> str:
        return f"ternary {_group(self.group_size)}"


class CodebookSpec(_Spec):
    """k-means: 2^bits centroids per codebook (one per tensor, or one per `group_rows` rows) and
    a bits-wide index per weight."""

    codec: Literal["codebook"] = "codebook"
    bits: int = Field(ge=1, le=8)
    group_rows: int | None = Field(default=None, ge=1)
    iterations: int = Field(default=30, ge=0)
    centroid_dtype: FloatDType = "float16"

    def describe(self) -> str:
        where = {None: "per-tensor", 1: "per-row"}.get(self.group_rows, f"per-{self.group_rows}-rows")
        return f"kmeans {1 << self.bits} centroids {where}"


class DenseSpec(_Spec):
    """Plain values in a float dtype (used for N:M kept values, Kronecker factors, or a module
    the recipe only casts)."""

    codec: Literal["dense"] = "dense"
    dtype: FloatDType = "float16"

    def describe(self) -> str:
        return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[self.dtype]


ValueSpec = Annotated[
    IntSpec | BinarySpec | TernarySpec | CodebookSpec | DenseSpec, Field(discriminator="codec")
]


class NMSpec(_Spec):
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


class KroneckerSpec(_Spec):
    """W ~ sum_r A_r (x) B_r. Give the shape of one factor: `a_shape` (A's rows x columns; B's
    follow from W's) or `b_shape` (then A's follow), so one rule fits layers of different shapes
    (`b_shape: [2, 2]` makes every A half as tall and half as wide as its weight). The factors are
    stored through `factors`."""

    codec: Literal["kronecker"] = "kronecker"
    a_shape: tuple[int, int] | None = None
    b_shape: tuple[int, int] | None = None
    rank: int = Field(default=1, ge=1)
    factors: ValueSpec = DenseSpec()

    @model_validator(mode="after")
    def _check(self) -> KroneckerSpec:
        if (self.a_shape is None) == (self.b_shape is None):
            raise ValueError("give exactly one of a_shape and b_shape")
        given = self.a_shape or self.b_shape
        if min(given) < 1:
            raise ValueError(f"{'a_shape' if self.a_shape else 'b_shape'} must be positive, got {given}")
        return self

    def describe(self) -> str:
        which, (r, c) = ("A", self.a_shape) if self.a_shape else ("B", self.b_shape)
        return f"kron {which}{r}x{c} r{self.rank} + {self.factors.describe()}"


CodecSpec = Annotated[
    IntSpec | BinarySpec | TernarySpec | CodebookSpec | DenseSpec | NMSpec | KroneckerSpec,
    Field(discriminator="codec"),
]

CODEC_NAMES = ("int", "binary", "ternary", "codebook", "dense", "nm", "kronecker")
