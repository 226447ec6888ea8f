"""`fit`: the stored tensors of a weight that already has a codec's structure (what `zoo pack` stores)."""

from __future__ import annotations

import pytest
import torch
from zoo.formats import codecs
from zoo.formats.errors import PatternError
from zoo.formats.fit import check_decodes_to, fit
from zoo.formats.spec import IntSpec, NMSpec

INT4 = IntSpec(bits=4, group_size=8)
NM_INT4 = NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=8))


def _on_a_clipped_grid(rows: int, cols: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights q * s whose groups' largest code is anything from 1 to 7 (what a clipping GPTQ leaves)."""
    g = torch.Generator().manual_seed(seed)
    top = torch.randint(1, 8, (rows, cols // 8, 1), generator=g)
    q = torch.randint(-7, 8, (rows, cols // 8, 8), generator=g).clamp(-top, top)
    q[..., 0] = top[..., 0]  # every group reaches its own largest code
    s = (torch.rand(rows, cols // 8, 1, generator=g) * 0.1 + 0.01).half().float()
    return (q * s).reshape(rows, cols), s.squeeze(-1)


def test_int_groups_below_the_top_code_get_their_own_scale():
    w, _ = _on_a_clipped_grid(16, 64, 0)
    with pytest.raises(PatternError):  # the absmax rule alone puts these groups off their grid
        check_decodes_to(codecs.encode(w, INT4), INT4, w)
    tensors = fit(w, INT4)
    assert torch.equal(codecs.decode(tensors, INT4, tuple(w.shape)), w)


def test_nm_values_on_a_clipped_grid_fit():
    values, _ = _on_a_clipped_grid(16, 32, 1)  # the kept values, as the value codec groups them
    with pytest.raises(PatternError):
        check_decodes_to(codecs.encode(values, INT4), INT4, values)
    w = torch.zeros(16, 16, 4)
    w[:, :, 1], w[:, :, 3] = values.view(16, 16, 2).unbind(-1)
    w = w.view(16, 64)
    tensors = fit(w, NM_INT4)
    assert torch.equal(codecs.decode(tensors, NM_INT4, tuple(w.shape)), w)


def test_weights_off_every_grid_are_refused():
    w, _ = _on_a_clipped_grid(4, 16, 2)
    w[0, 1] += 0.3 * (w[0, 0] / 7)  # a third of a step off
    with pytest.raises(PatternError, match="not representable as int4"):
        fit(w, INT4)


def test_too_many_nonzeros_are_refused_before_any_grid():
    with pytest.raises(PatternError, match="not 2:4 sparse: row 0, columns 0-3 hold 3 nonzeros"):
        fit(torch.tensor([[1.0, 1.0, 1.0, 0.0]]), NM_INT4)
