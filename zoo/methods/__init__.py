"""Training-time compression methods: fake quantization, N:M masks, codebooks, Kronecker factors,
layer reduction.

Each target module's weight gets a torch parametrization (torch.nn.utils.parametrize): its codec's own
training-time fake (formats/codecs/), which computes in the forward pass exactly the weight the codec will
store; the latent weight underneath stays full precision and is what the optimizer updates. `export` removes the
parametrizations, leaving the compressed values as ordinary weights, which `zoo pack` then stores
(and verifies) in the compact format."""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn.utils import parametrize

from zoo.formats.codecs import FakeOptions, fake_for
from zoo.formats.spec import CodecSpec
from zoo.loaders.compat import tied_weights_keys

from ..architecture import layer_kind
from ..errors import RecipeError
from ..recipes import Recipe
from ..recipes.training import TrainingSpec
from .layers import keep_layers, layer_list


def fake_quantizer(spec: CodecSpec, weight: torch.Tensor, training: TrainingSpec) -> nn.Module:
    """The training-time module that reproduces `spec`'s decoded weight: the codec's own fake (formats/codecs/)."""
    return fake_for(spec, weight, FakeOptions(clip=training.clip, percentile=training.clip_init_percentile))


def _weight(module: nn.Module) -> torch.Tensor:
    """A compressed module's weight: its Parameter, or once parametrized its training-time value."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is a {type(weight).__name__}, not a tensor")
    return weight


def plan_modules(model: nn.Module, recipe: Recipe) -> dict[str, CodecSpec]:
    """module name -> codec, for the modules of a live model the recipe compresses. Of modules whose weights
    the model ties together only the one that holds the weight is planned; `attach` gives the others the same
    training-time module, and the packer stores the weight once."""
    from zoo.loaders.naming import tied_groups

    partners = tied_groups(model)
    copies = {target for targets in partners.values() for target in targets}
    plan = {}
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if not kind or name in copies:
            continue
        shape = tuple(module.weight.shape)
        tied = [(other, layer_kind(model.get_submodule(other)) or "other") for other in partners.get(name, [])]
        spec = recipe.spec_for_tied(name, kind, tied, shape)
        if spec is not None:
            plan[name] = spec
    if not plan:
        raise RecipeError(f"recipe {recipe.name} matches no module of the model")
    return plan


def check_plan(model: nn.Module, recipe: Recipe) -> dict[str, CodecSpec]:
    """`plan_modules`, and every codec checked against its module's weight shape (factor shapes
    that do not divide it, a rank too high...): for a meta-device model, before any training."""
    from zoo.formats import codecs
    from zoo.formats.errors import CodecError

    plan = plan_modules(model, recipe)
    for name, spec in plan.items():
        shape = tuple(_weight(model.get_submodule(name)).shape)
        try:
            codecs.layout(shape, spec)
        except CodecError as exc:
            raise RecipeError(
                f"recipe {recipe.name}: module {name} {list(shape)}: {exc}", hint=exc.hint, module=name
            ) from None
    return plan


def attach(model: nn.Module, plan: dict[str, CodecSpec], training: TrainingSpec) -> dict[str, nn.Module]:
    """Parametrize every planned module's weight with its fake quantizer; returns them by module name.
    Modules tied to a planned one compute with its training-time weight (`_follow`), so they stay one weight."""
    from zoo.loaders.naming import tied_groups

    groups = tied_groups(model)
    fakes = {}
    for name, spec in plan.items():
        module = model.get_submodule(name)
        weight = _weight(module)
        fake = fake_quantizer(spec, weight, training).to(weight.device)
        parametrize.register_parametrization(module, "weight", fake, unsafe=True)
        for path in groups.get(name, []):
            _follow(model.get_submodule(path), module)
        fakes[name] = fake
    return fakes


def _follow(tied: nn.Module, owner: nn.Module) -> None:
    """Make a module whose weight the model ties to `owner`'s compute with the owner's training-time weight.
    Only the owner is parametrized: the tied module keeps the shared latent Parameter (which transformers
    saves once, as a known tie), and its forward reads `owner.weight`, the compressed value, instead."""
    if isinstance(tied, nn.Linear):
        # an instance's forward, replaced on purpose; a partial: deepcopy keeps the pair
        tied.forward = functools.partial(_linear_with, owner, tied)  # type: ignore[method-assign]
    elif isinstance(tied, nn.Embedding):
        tied.forward = functools.partial(_embedding_with, owner, tied)  # type: ignore[method-assign]
    else:
        raise RecipeError(f"{type(tied).__name__} layers tied to a compressed weight cannot be trained yet")


def _linear_with(owner: nn.Module, tied: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.linear(x, _weight(owner), tied.bias)


def _embedding_with(owner: nn.Module, tied: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    return nn.functional.embedding(
        ids, _weight(owner), tied.padding_idx, tied.max_norm, tied.norm_type, tied.scale_grad_by_freq, tied.sparse
    )


def stored_tensors(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> codec tensors, for the modules whose trained parameters are the stored form
    itself (Kronecker factors) rather than a weight the packer encodes. Call before `export`."""
    out = {}
    for name, module in model.named_modules():  # a tied module is not parametrized: only its owner is stored
        if parametrize.is_parametrized(module, "weight"):
            fake = module.parametrizations.weight[0]
            if hasattr(fake, "stored_tensors"):  # a fake whose parameters are the stored form (Kronecker's)
                out[name] = fake.stored_tensors()
    return out


@torch.no_grad()
def export(model: nn.Module) -> None:
    """Replace each parametrized weight by its compressed value (a plain Parameter again); modules the model
    ties share one Parameter again afterwards."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        forward = module.__dict__.get("forward")
        if isinstance(forward, functools.partial) and forward.func in (_linear_with, _embedding_with):
            del module.__dict__["forward"]  # a tied module following its owner (`_follow`); other hooks stay
    tie_weights = getattr(model, "tie_weights", None)  # transformers' models have it
    if tied_weights_keys(model) and tie_weights is not None:
        tie_weights()


__all__ = [
    "attach",
    "check_plan",
    "export",
    "fake_quantizer",
    "keep_layers",
    "layer_list",
    "plan_modules",
    "stored_tensors",
]
