"""Layer reduction (XTC): a shallower student made of a chosen subset of the teacher's layers.

No pre-training distillation: the student starts from the kept teacher layers, in order, and
distillation maps student layer j to teacher layer keep[j]."""

from __future__ import annotations

from torch import nn

from zoo.loaders.structure import layer_list

from ..errors import RecipeError

_DEPTH_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers")


def keep_layers(model: nn.Module, keep: list[int]) -> list[int]:
    """Drop every layer not in `keep` (0-based), in place; returns the teacher layer of each student layer."""
    name, layers = layer_list(model)
    depth = len(layers)
    if any(i >= depth for i in keep):
        raise RecipeError(f"keep_layers {keep} names a layer beyond the model's {depth} (0..{depth - 1})")
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList([layers[i] for i in keep]))
    config = model.config
    for key in _DEPTH_KEYS:
        if getattr(config, key, None) == depth:
            setattr(config, key, len(keep))
    return list(keep)
