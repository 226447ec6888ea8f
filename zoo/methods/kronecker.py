"""Kronecker factorisation (KroneckerBERT): the weight becomes sum_r A_r (x) B_r with trained factors.

The factors start from the nearest Kronecker product of the dense weight (Van Loan rearrangement +
truncated SVD, the codec's own encoder) and are the parameters the optimizer updates; the dense
weight underneath is no longer used. When the recipe stores the factors through a value codec
(int8, say), each factor is fake-quantized in the forward pass like any other weight, so the
product the student trains with is exactly what the checkpoint decodes to. `stored_tensors` hands
the trained factors to the packer as they are: re-factorising their product would give an
equivalent but differently rotated pair that no longer sits on the value grid."""

from __future__ import annotations

import torch
from torch import nn

from zoo.formats import codecs
from zoo.formats.codecs.base import with_prefix
from zoo.formats.codecs.kronecker import factor_shapes, nearest_kronecker
from zoo.formats.spec import KroneckerSpec


class KroneckerFake(nn.Module):
    def __init__(self, spec: KroneckerSpec, weight: torch.Tensor, factor_fake):
        super().__init__()
        self.spec = spec
        self.shape = tuple(weight.shape)
        (_, m1, n1), _ = factor_shapes(self.shape, spec)
        a, b = nearest_kronecker(weight.detach().float().reshape(self.shape[0], -1), (m1, n1), spec.rank)
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.fake_a = factor_fake(spec.factors, self.a)
        self.fake_b = factor_fake(spec.factors, self.b)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors as stored (rounded to the factor codec), gradients straight through."""
        return self.fake_a(self.a), self.fake_b(self.b)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # the latent dense weight is not used
        # One contraction over the rank (a single matmul), not formats' term-by-term kron_sum: the same
        # product up to rounding (the packer checks the stored factors decode to it within tolerance),
        # and 20x faster forward and backward for a rank-16 embedding table.
        a, b = self.factors()
        return torch.einsum("rac,rbd->abcd", a, b).reshape(self.shape).to(w.dtype)

    @torch.no_grad()
    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """The codec's tensors for the trained factors (what `codecs.encode` would write for them)."""
        a, b = self.factors()
        out = with_prefix(codecs.encode(a.detach(), self.spec.factors), "kron_a")
        out.update(with_prefix(codecs.encode(b.detach(), self.spec.factors), "kron_b"))
        return out
