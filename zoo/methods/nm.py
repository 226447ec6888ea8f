"""N:M sparsity during training (NxMiFormer / deep-compression style), optionally with a value codec.

The mask is a buffer: the N largest |w| of every M consecutive weights of a row, recomputed from
the latent weights every `mask_interval` steps (`update_mask`, driven by a Trainer callback), so
weights pruned early can grow back. Pruned weights still get gradients (straight through), which
is what lets them return. With a ramp, pruning tightens gradually from dense to N:M (gradual
magnitude pruning); the value codec starts once the final N is reached. The kept values go
through the value codec's own fake quantizer in exactly the layout the N:M codec stores them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.formats.codecs.nm import select
from zoo.formats.spec import NMSpec


class NMFake(nn.Module):
    def __init__(self, spec: NMSpec, weight: torch.Tensor, values: nn.Module | None):
        super().__init__()
        self.spec = spec
        self.rows = weight.shape[0]
        self.cols = weight[0].numel()
        self.groups = math.ceil(self.cols / spec.m)
        self.values = values
        self.register_buffer("keep", torch.tensor(spec.n))  # weights kept per group now (n..m)
        self.register_buffer("mask", torch.zeros(self.rows * self.groups, spec.m, dtype=torch.bool))
        self.register_buffer("positions", torch.zeros(self.rows * self.groups, spec.n, dtype=torch.long))
        self.update_mask(weight, spec.n)

    @torch.no_grad()
    def update_mask(self, weight: torch.Tensor, keep: int) -> None:
        matrix = weight.detach().reshape(self.rows, -1).float()
        mask, positions = select(matrix, keep, self.spec.m)
        self.mask.copy_(mask)
        self.keep.fill_(keep)
        if keep == self.spec.n:
            self.positions.copy_(positions)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        m = self.spec.m
        padded = F.pad(w.reshape(self.rows, -1), (0, self.groups * m - self.cols)).view(-1, m)
        pruned_grad = padded * ~self.mask  # zero forward, gradient straight through to pruned weights
        if int(self.keep) > self.spec.n or self.values is None:
            kept = padded * self.mask
        else:
            values = padded.gather(1, self.positions).view(self.rows, self.groups * self.spec.n)
            fake = self.values(values).reshape(-1, self.spec.n)
            kept = torch.zeros_like(padded).scatter(1, self.positions, fake)
        out = kept + pruned_grad - pruned_grad.detach()
        return out.reshape(self.rows, -1)[:, : self.cols].reshape(w.shape)
