"""Training-time compression methods: fake quantization, N:M masks, codebooks, Kronecker factors,
layer reduction.

Each target module's weight gets a torch parametrization (torch.nn.utils.parametrize) that
computes, in the forward pass, exactly the weight the recipe's codec will store; the latent
weight underneath stays full precision and is what the optimizer updates. `export` removes the
parametrizations, leaving the compressed values as ordinary weights, which `zoo pack` then stores
(and verifies) in the compact format."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from formats.spec import BinarySpec, CodebookSpec, CodecSpec, DenseSpec, IntSpec, KroneckerSpec, NMSpec, TernarySpec

from ..architecture import layer_kind
from ..errors import RecipeError
from ..recipes import Recipe
from ..recipes.training import TrainingSpec
from .binary import BinaryFake, TernaryFake
from .kmeans import CodebookFake
from .kronecker import KroneckerFake
from .layers import keep_layers, layer_list
from .nm import NMFake
from .quantize import DenseFake, RoundTripFake, int_fake


def fake_quantizer(spec: CodecSpec, weight: torch.Tensor, training: TrainingSpec) -> nn.Module:
    """The training-time module that reproduces `spec`'s decoded weight."""
    if isinstance(spec, IntSpec):
        return int_fake(spec, weight, clip=training.clip, percentile=training.clip_init_percentile)
    if isinstance(spec, BinarySpec):
        return BinaryFake(spec)
    if isinstance(spec, TernarySpec):
        return TernaryFake(spec)
    if isinstance(spec, CodebookSpec):
        return CodebookFake(spec, weight)
    if isinstance(spec, NMSpec):
        # the value codec sees the kept weights as the N:M codec stores them: (rows, groups * N)
        values = _kept_values(weight, spec)
        return NMFake(spec, weight, fake_quantizer(spec.values, values, training))
    if isinstance(spec, KroneckerSpec):
        return KroneckerFake(spec, weight, lambda factor_spec, factor: fake_quantizer(factor_spec, factor, training))
    if isinstance(spec, DenseSpec):
        return DenseFake(spec)
    return RoundTripFake(spec)


def _kept_values(weight: torch.Tensor, spec: NMSpec) -> torch.Tensor:
    from formats.codecs.nm import select

    matrix = weight.detach().reshape(weight.shape[0], -1).float()
    rows, cols = matrix.shape
    groups = -(-cols // spec.m)
    _, positions = select(matrix, spec.n, spec.m)
    padded = torch.nn.functional.pad(matrix, (0, groups * spec.m - cols)).view(-1, spec.m)
    return padded.gather(1, positions).view(rows, groups * spec.n)


def plan_modules(model: nn.Module, recipe: Recipe) -> dict[str, CodecSpec]:
    """module name -> codec, for the modules of a live model the recipe compresses."""
    from loaders.naming import tied_modules

    tied = tied_modules(model)
    plan = {}
    for name, module in model.named_modules():
        kind = layer_kind(module)
        spec = recipe.spec_for(name, kind, tuple(module.weight.shape)) if kind else None
        if spec is None:
            continue
        if name in tied:
            raise RecipeError(f"recipe {recipe.name} compresses {name}, whose weight the model ties to {tied[name]}")
        plan[name] = spec
    if not plan:
        raise RecipeError(f"recipe {recipe.name} matches no module of the model")
    return plan


def check_plan(model: nn.Module, recipe: Recipe) -> dict[str, CodecSpec]:
    """`plan_modules`, and every codec checked against its module's weight shape (factor shapes
    that do not divide it, a rank too high...): for a meta-device model, before any training."""
    from formats import codecs
    from formats.errors import CodecError

    plan = plan_modules(model, recipe)
    for name, spec in plan.items():
        shape = tuple(model.get_submodule(name).weight.shape)
        try:
            codecs.layout(shape, spec)
        except CodecError as exc:
            raise RecipeError(f"recipe {recipe.name}: module {name} {list(shape)}: {exc}", hint=exc.hint) from None
    return plan


def attach(model: nn.Module, plan: dict[str, CodecSpec], training: TrainingSpec) -> dict[str, nn.Module]:
    """Parametrize every planned module's weight with its fake quantizer; returns them by module name."""
    fakes = {}
    for name, spec in plan.items():
        module = model.get_submodule(name)
        fake = fake_quantizer(spec, module.weight, training).to(module.weight.device)
        parametrize.register_parametrization(module, "weight", fake, unsafe=True)
        fakes[name] = fake
    return fakes


def stored_tensors(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> codec tensors, for the modules whose trained parameters are the stored form
    itself (Kronecker factors) rather than a weight the packer encodes. Call before `export`."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            fake = module.parametrizations.weight[0]
            if isinstance(fake, KroneckerFake):
                out[name] = fake.stored_tensors()
    return out


@torch.no_grad()
def export(model: nn.Module) -> None:
    """Replace each parametrized weight by its compressed value (a plain Parameter again)."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


__all__ = ["attach", "check_plan", "export", "fake_quantizer", "keep_layers", "layer_list", "plan_modules", "stored_tensors"]
