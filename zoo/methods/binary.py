"""Binary and ternary weights during training (BS-Flex / XTC style).

The latent full-precision weight keeps receiving gradients through the straight-through
estimator, so a weight may cross zero and change its cluster (sign) at any step: BS-Flex's
reassignment, unlike k-means' fixed assignments. Forward values are exactly the codec's:
binary sign(w)*mean|w| per group; ternary {-a, 0, a} with the codec's threshold."""

from __future__ import annotations

import torch
from torch import nn

from zoo.formats.codecs.base import from_groups, group_sizes, to_groups
from zoo.formats.spec import BinarySpec, TernarySpec

from .quantize import straight_through


class BinaryFake(nn.Module):
    def __init__(self, spec: BinarySpec):
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        matrix = w.reshape(w.shape[0], -1).float()
        x = to_groups(matrix, self.spec.group_size)
        sizes = group_sizes(matrix.shape[1], self.spec.group_size, w.device)
        alpha = (x.detach().abs().sum(-1) / sizes).to(getattr(torch, self.spec.scale_dtype)).float()
        signs = torch.where(x.detach() >= 0, 1.0, -1.0)
        q = straight_through(x, signs * alpha.unsqueeze(-1))
        return from_groups(q, matrix.shape[1]).reshape(w.shape).to(w.dtype)


class TernaryFake(nn.Module):
    def __init__(self, spec: TernarySpec):
        super().__init__()
        self.spec = spec

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        matrix = w.reshape(w.shape[0], -1).float()
        x = to_groups(matrix, self.spec.group_size)
        d = x.detach()
        mag = d.abs()
        sizes = group_sizes(matrix.shape[1], self.spec.group_size, w.device)
        delta = (self.spec.threshold * mag.sum(-1) / sizes).unsqueeze(-1)
        t = (d > delta).float() - (d < -delta).float()
        kept = t != 0
        alpha = (mag * kept).sum(-1) / kept.sum(-1).clamp(min=1)
        alpha = alpha.to(getattr(torch, self.spec.scale_dtype)).float().unsqueeze(-1)
        q = straight_through(x, t * alpha)
        return from_groups(q, matrix.shape[1]).reshape(w.shape).to(w.dtype)
