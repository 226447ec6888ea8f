"""Kronecker codec: W (m x n) ~ sum_r A_r (x) B_r, A_r (m1 x n1), B_r (m2 x n2), m = m1*m2, n = n1*n2.

Stored tensors (through the factor codec, default fp16):
    kron_a_*  factors A as an (rank, m1, n1) tensor
    kron_b_*  factors B as an (rank, m2, n2) tensor

Encoding is the nearest Kronecker product (Van Loan & Pitsianis): rearrange W so that each
m2 x n2 block becomes one row, R[(i1,j1), (i2,j2)] = W[i1*m2+i2, j1*n2+j2]; the best rank-r
sum of Kronecker products is the truncated SVD of R, with sqrt(sigma) given to each factor.
Decoding sums the r Kronecker products in order r = 0, 1, ...; runtime modules (loaders) apply
the factors without building W.

`shapes_for_ratio` turns a target compression ratio into concrete factor shapes for one weight
(what a recipe's `ratio:` rule is resolved to, module by module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from .. import codecs as _codecs
from ..errors import CodecError
from .base import (
    Codec,
    FakeOptions,
    SpecBase,
    TensorLayout,
    as_matrix,
    fake_for,
    layout_with_prefix,
    register,
    strip_prefix,
    with_prefix,
)
from .dense import DenseSpec

if TYPE_CHECKING:  # the union of value codecs, built once every codec has registered (formats/codecs/__init__)
    from . import ValueSpec


class KroneckerSpec(SpecBase):
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
        which, given = self.given()
        if min(given) < 1:
            raise ValueError(f"{which.lower()}_shape must be positive, got {given}")
        return self

    def given(self) -> tuple[Literal["A", "B"], tuple[int, int]]:
        """The factor whose shape the spec gives ("A" or "B"), and that shape."""
        if self.a_shape is not None:
            return "A", self.a_shape
        assert self.b_shape is not None, "the validator requires one of a_shape and b_shape"
        return "B", self.b_shape

    def describe(self) -> str:
        which, (r, c) = self.given()
        return f"kron {which}{r}x{c} r{self.rank} + {self.factors.describe()}"


def factor_shapes(shape, spec: KroneckerSpec) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(rank, m1, n1), (rank, m2, n2) of the factors of a weight of `shape`."""
    if len(shape) != 2:
        raise CodecError(f"the Kronecker codec needs a 2-D weight, got shape {tuple(shape)}")
    m, n = shape
    name, given = spec.given()
    if m % given[0] or n % given[1]:
        raise CodecError(
            f"Kronecker factor {name} {given[0]}x{given[1]} does not divide the weight {m}x{n}",
            hint=f"choose {name.lower()}_shape whose sides divide the weight's rows and columns",
        )
    other = (m // given[0], n // given[1])
    (m1, n1), (m2, n2) = (given, other) if name == "A" else (other, given)
    if spec.rank > min(m1 * n1, m2 * n2):
        raise CodecError(f"Kronecker rank {spec.rank} exceeds min({m1 * n1}, {m2 * n2}) for A {m1}x{n1}, B {m2}x{n2}")
    return (spec.rank, m1, n1), (spec.rank, m2, n2)


def _divisors(k: int) -> list[int]:
    return [d for d in range(1, k + 1) if k % d == 0]


def multiply_adds(a_shape: tuple[int, int], b_shape: tuple[int, int], rank: int) -> int:
    """Multiply-adds per input vector of the factored product y = sum_r vec(A_r X B_r^T), X the input
    as an n1 x n2 matrix (row-major), in the cheaper of the two association orders (dense: m * n)."""
    (m1, n1), (m2, n2) = a_shape, b_shape
    return rank * min(m2 * n1 * (n2 + m1), m1 * n2 * (n1 + m2))


def shapes_for_ratio(shape, ratio: float, *, rank: int = 1, factors=None, one_row_b: bool = False) -> KroneckerSpec:
    """The factor shapes for a weight of `shape` that store it at least `ratio` times smaller than
    fp32, rank `rank`, factors through `factors`.

    Every split m = m1 * m2, n = n1 * n2 (neither factor the whole weight) is a candidate; of those
    that reach the ratio, the one that stores the most bytes wins (the closest to the target: the
    most capacity the budget allows), then the one with the fewest multiply-adds, then the smaller B.
    `one_row_b` keeps B to one row (embedding tables: each token's row is a_i (x) b, rows of
    different tokens are never mixed). Raises CodecError when no split reaches the ratio."""
    factors = factors if factors is not None else DenseSpec()
    if len(shape) != 2:
        raise CodecError(f"the Kronecker codec needs a 2-D weight, got shape {tuple(shape)}")
    if ratio <= 1:
        raise CodecError(f"a target ratio must be above 1, got {ratio}")
    m, n = shape = tuple(shape)
    budget = 4 * m * n / ratio
    best, best_key = None, None
    for m2 in [1] if one_row_b else _divisors(m):
        for n2 in _divisors(n):
            m1, n1 = m // m2, n // n2
            if m1 * n1 == 1 or m2 * n2 == 1:  # one factor would be the whole weight
                continue
            try:  # a rank above the split's limit, or factors the value codec refuses
                stored = _codecs.nbytes(shape, KroneckerSpec(b_shape=(m2, n2), rank=rank, factors=factors))
            except CodecError:
                continue
            if stored > budget:
                continue
            key = (-stored, multiply_adds((m1, n1), (m2, n2), rank), m2 * n2, m2)
            if best_key is None or key < best_key:
                best, best_key = (m2, n2), key
    if best is None:
        raise CodecError(
            f"no Kronecker factor shapes of rank {rank} store a {m}x{n} weight {ratio:g}x smaller than fp32"
            f" with {factors.describe()} factors",
            hint="lower the ratio, lower the rank, or store the factors in fewer bits",
        )
    return KroneckerSpec(b_shape=best, rank=rank, factors=factors)


def nearest_kronecker(w: torch.Tensor, a_shape: tuple[int, int], rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (rank, m1, n1), (rank, m2, n2) of the best rank-r Kronecker approximation of w."""
    (m, n), (m1, n1) = w.shape, a_shape
    m2, n2 = m // m1, n // n1
    rearranged = w.reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)
    u, s, vh = torch.linalg.svd(rearranged.to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    a = (u[:, :rank] * root).T.reshape(rank, m1, n1)
    b = (vh[:rank] * root.unsqueeze(1)).reshape(rank, m2, n2)
    return a.to(torch.float32), b.to(torch.float32)


def kron_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_r A_r (x) B_r as a dense (m1*m2, n1*n2) matrix (differentiable in a and b)."""
    _, m1, n1 = a.shape
    _, m2, n2 = b.shape
    out = None
    for a_r, b_r in zip(a.float(), b.float(), strict=True):  # over the rank, not over elements
        term = torch.einsum("ac,bd->abcd", a_r, b_r).reshape(m1 * m2, n1 * n2)
        out = term if out is None else out + term
    assert out is not None, "Kronecker factors have rank >= 1 (KroneckerSpec.rank)"
    return out


def kron_rows(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows `rows` of sum_r A_r (x) B_r: row i is sum_r A_r[i // m2] (x) B_r[i % m2], no dense matrix built."""
    m2 = b.shape[1]
    a_rows, b_rows = a[:, rows // m2].float(), b[:, rows % m2].float()  # (rank, len, n1), (rank, len, n2)
    out = None
    for a_r, b_r in zip(a_rows, b_rows, strict=True):  # same order of summation as kron_sum
        term = torch.einsum("lc,ld->lcd", a_r, b_r).reshape(len(rows), -1)
        out = term if out is None else out + term
    assert out is not None, "Kronecker factors have rank >= 1 (KroneckerSpec.rank)"
    return out


def kron_linear(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., n1*n2) -> (..., m1*m2) with W = sum_r A_r (x) B_r, without building W.

    With X the tokens reshaped to (M, n1, n2), each term is A_r X B_r^T. Laid out as one
    (n1, M*n2) matrix, the A side is a single large GEMM for all tokens (a batched product of M
    small ones is several times slower on CPU), and the B side one GEMM over its small dimension.
    Multiply-adds per token: r * m1 * n2 * (n1 + m2), against m1 * m2 * n1 * n2 for the dense
    product: about r / m2 of it when B is small (as many at rank 2 with B 2 x 2, half at rank 1)."""
    _, m1, n1 = a.shape
    _, m2, n2 = b.shape
    lead = x.shape[:-1]
    xs = x.reshape(-1, n1, n2).to(a.dtype)
    tokens = xs.shape[0]
    columns = xs.transpose(0, 1).reshape(n1, tokens * n2)  # (n1, M*n2)
    out = None
    for a_r, b_r in zip(a, b, strict=True):
        term = (a_r @ columns).view(m1 * tokens, n2) @ b_r.t()  # (m1*M, m2)
        out = term if out is None else out.add_(term)
    assert out is not None, "Kronecker factors have rank >= 1 (KroneckerSpec.rank)"
    out = out.view(m1, tokens, m2).transpose(0, 1).reshape(*lead, m1 * m2)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(x.dtype)


def factors(tensors, spec: KroneckerSpec, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded factors A (rank, m1, n1) and B (rank, m2, n2) of a stored weight of `shape` (float32): what
    decode sums, and what kernel mode multiplies with directly."""
    a_shape, b_shape = factor_shapes(shape, spec)
    a = _codecs.decode_checked(strip_prefix(tensors, "kron_a"), spec.factors, a_shape)
    b = _codecs.decode_checked(strip_prefix(tensors, "kron_b"), spec.factors, b_shape)
    return a, b


class KroneckerFake(nn.Module):
    """Kronecker factorisation during training (KroneckerBERT): the weight becomes sum_r A_r (x) B_r with trained
    factors.

    The factors start from the nearest Kronecker product of the dense weight (this codec's own encoder) and are
    the parameters the optimizer updates; the dense weight underneath is no longer used. When the recipe stores
    the factors through a value codec (int8, say), each factor goes through that codec's own fake in the forward
    pass, so the product the student trains with is exactly what the checkpoint decodes to. `stored_tensors`
    hands the trained factors to the packer as they are: re-factorising their product would give an equivalent
    but differently rotated pair that no longer sits on the value grid."""

    def __init__(self, spec: KroneckerSpec, weight: torch.Tensor, options: FakeOptions):
        super().__init__()
        self.spec = spec
        self.shape = tuple(weight.shape)
        (_, m1, n1), _ = factor_shapes(self.shape, spec)
        a, b = nearest_kronecker(weight.detach().float().reshape(self.shape[0], -1), (m1, n1), spec.rank)
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.fake_a = fake_for(spec.factors, self.a, options)
        self.fake_b = fake_for(spec.factors, self.b, options)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors as stored (rounded to the factor codec), gradients straight through."""
        return self.fake_a(self.a), self.fake_b(self.b)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # the latent dense weight is not used
        # One contraction over the rank (a single matmul), not kron_sum's term by term: the same product up to
        # rounding (the packer checks the stored factors decode to it within tolerance), and 20x faster forward
        # and backward for a rank-16 embedding table.
        a, b = self.factors()
        return torch.einsum("rac,rbd->abcd", a, b).reshape(self.shape).to(w.dtype)

    @torch.no_grad()
    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """The codec's tensors for the trained factors (what `codecs.encode` would write for them)."""
        a, b = self.factors()
        out = with_prefix(_codecs.encode(a.detach(), self.spec.factors), "kron_a")
        out.update(with_prefix(_codecs.encode(b.detach(), self.spec.factors), "kron_b"))
        return out


@register
class Kronecker(Codec):
    spec = KroneckerSpec
    value_codec = False
    factored = True

    def factors(self, tensors, spec: KroneckerSpec, shape) -> tuple[torch.Tensor, torch.Tensor]:
        return factors(tensors, spec, shape)

    def factor_linear(
        self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return kron_linear(x, a, b, bias)

    def factor_rows(self, a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return kron_rows(a, b, rows)

    def encode(
        self, weight: torch.Tensor, spec: KroneckerSpec, scale: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        (_, m1, n1), _ = factor_shapes(tuple(weight.shape), spec)
        a, b = nearest_kronecker(as_matrix(weight), (m1, n1), spec.rank)
        out = with_prefix(_codecs.encode(a, spec.factors), "kron_a")
        out.update(with_prefix(_codecs.encode(b, spec.factors), "kron_b"))
        return out

    def decode(self, tensors, spec: KroneckerSpec, shape) -> torch.Tensor:
        return kron_sum(*factors(tensors, spec, shape)).reshape(shape)

    def decode_rows(self, tensors, spec: KroneckerSpec, shape, rows: torch.Tensor) -> torch.Tensor:
        """Only the rows asked for (an embedding lookup): no dense matrix is built."""
        return kron_rows(*factors(tensors, spec, shape), rows)

    def layout(self, shape, spec: KroneckerSpec) -> dict[str, TensorLayout]:
        a_shape, b_shape = factor_shapes(shape, spec)
        out = layout_with_prefix(_codecs.layout(a_shape, spec.factors), "kron_a")
        out.update(layout_with_prefix(_codecs.layout(b_shape, spec.factors), "kron_b"))
        return out

    def value_bits(self, spec: KroneckerSpec) -> float:
        return _codecs.codec_for(spec.factors).value_bits(spec.factors)

    def tags(self, spec: KroneckerSpec) -> list[str]:
        return ["kronecker", *_codecs.codec_for(spec.factors).tags(spec.factors)]

    def information_bits(self, shape, spec: KroneckerSpec) -> float:
        a, b = factor_shapes(tuple(shape), spec)
        child = _codecs.codec_for(spec.factors)
        return child.information_bits(a, spec.factors) + child.information_bits(b, spec.factors)

    def fake(self, spec: KroneckerSpec, weight, options: FakeOptions) -> KroneckerFake:
        return KroneckerFake(spec, weight, options)
