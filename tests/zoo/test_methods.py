"""Training-time methods compute exactly what the codecs store, and gradients reach what trains."""

import pytest
import torch
from torch import nn
from zoo.formats import codecs
from zoo.formats.fit import check_decodes_to
from zoo.formats.spec import BinarySpec, CodebookSpec, IntSpec, NMSpec, TernarySpec

from zoo.methods import attach, export, fake_quantizer, keep_layers
from zoo.recipes.training import TrainingSpec

SPECS = {
    "int8-row": IntSpec(bits=8, group_size=None),
    "int4-g128": IntSpec(bits=4, group_size=128),
    "int4-asym": IntSpec(bits=4, group_size=64, symmetric=False),
    "binary": BinarySpec(group_size=128),
    "ternary": TernarySpec(group_size=128),
    "kmeans4": CodebookSpec(bits=4),
    "kmeans2-rows": CodebookSpec(bits=2, group_rows=16),
    "2of4-int4": NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=128)),
    "1of4-dense": NMSpec(n=1, m=4, values={"codec": "dense", "dtype": "float16"}),
}


def weight(rows=40, cols=300, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("name", SPECS)
def test_fake_forward_equals_codec_round_trip(name):
    spec, w = SPECS[name], weight()
    fake = fake_quantizer(spec, w, TrainingSpec())
    want = codecs.decode(codecs.encode(w, spec), spec, tuple(w.shape))
    assert torch.equal(fake(w), want)


@pytest.mark.parametrize("name", ["int4-g128", "binary", "ternary", "2of4-int4"])
def test_gradient_passes_straight_through_to_the_latent_weight(name):
    w = weight().requires_grad_()
    fake = fake_quantizer(SPECS[name], w, TrainingSpec())
    fake(w).sum().backward()
    assert w.grad is not None and bool((w.grad != 0).any())


def test_kmeans_trains_centroids_not_assignments():
    w = weight().requires_grad_()
    fake = fake_quantizer(SPECS["kmeans4"], w, TrainingSpec())
    before = fake.index.clone()
    (fake(w) * torch.randn_like(w)).sum().backward()
    assert fake.centroids.grad is not None and bool((fake.centroids.grad != 0).any())
    assert torch.equal(fake.index, before)


@pytest.mark.parametrize("percentile", [100.0, 99.0])
def test_learned_clip_export_is_representable(percentile):
    spec, w = SPECS["int4-g128"], weight()
    fake = fake_quantizer(spec, w, TrainingSpec(clip="learned", clip_init_percentile=percentile))
    with torch.no_grad():
        fake.clip.mul_(torch.empty_like(fake.clip).uniform_(0.5, 1.5))  # as if trained
    quantized = fake(w).detach()
    # the codec's own rule re-encodes the trained weight, within fp16 scale rounding
    check_decodes_to(codecs.encode(quantized, spec), spec, quantized)
    w.requires_grad_()
    fake(w).sum().backward()
    assert fake.clip.grad is not None


def test_nm_mask_recomputes_and_ramps():
    spec, w = SPECS["2of4-int4"], weight()
    fake = fake_quantizer(spec, w, TrainingSpec())
    fake.update_mask(w, 3)  # gradual pruning: 3 of 4 kept, no value codec yet
    assert int(((fake(w) != 0).view(-1, 4).sum(1) > 2).sum()) > 0
    fake.update_mask(-w.flip(1), 2)
    out = fake(w)
    assert int((out != 0).reshape(-1, 4).sum(1).max()) <= 2
    check_decodes_to(codecs.encode(out.detach(), spec), spec, out.detach())


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([nn.Linear(16, 16) for _ in range(4)])


def test_attach_then_export_leaves_plain_weights_equal_to_the_forward():
    model = Tiny()
    plan = {f"layer.{i}": SPECS["ternary"] for i in range(4)}
    attach(model, plan, TrainingSpec())
    during = model.layer[0].weight.detach().clone()
    export(model)
    assert type(model.layer[0].weight) is nn.Parameter and torch.equal(model.layer[0].weight, during)
    assert set(model.state_dict()) == {f"layer.{i}.{p}" for i in range(4) for p in ("weight", "bias")}


def test_keep_layers_builds_a_shallower_student():
    model = Tiny()
    model.config = type("C", (), {"num_hidden_layers": 4})()
    kept = [model.layer[1], model.layer[3]]
    keep_layers(model, [1, 3])
    assert list(model.layer) == kept and model.config.num_hidden_layers == 2
