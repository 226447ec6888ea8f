"""Checkpoint names vs the model's module names.

A checkpoint's module names can differ from the module paths of the class that loads it: the base
prefix may be added or dropped (`encoder.layer.0...` in a BertModel checkpoint is
`bert.encoder.layer.0...` in BertForSequenceClassification), and transformers 5 renames some
architectures' keys on load and back on save (ViT's `encoder.layer.N.attention.attention.query`
is `layers.N.attention.q_proj`). zoo's manifest keeps the checkpoint's names; these functions find
where each one lives in a model, using transformers' own renaming rules."""

from __future__ import annotations

import torch

from .compat import renamed_keys, tied_weights_keys


def _renamed(model: torch.nn.Module, names) -> dict[str, str]:
    """Checkpoint module name -> the name transformers loads its weight under."""
    keys = renamed_keys(model, [f"{name}.weight" for name in names])
    return {name: keys[f"{name}.weight"].removesuffix(".weight") for name in names}


def model_paths(model: torch.nn.Module, names) -> dict[str, str | None]:
    """Checkpoint module name -> its module path in `model` (None where the model has no such module)."""
    names = list(names)
    modules = dict(model.named_modules())
    prefix = getattr(model, "base_model_prefix", "")
    renamed = _renamed(model, names)
    out = {}
    for name in names:
        candidates = [renamed.get(name), name]
        if prefix:
            candidates += [f"{prefix}.{name}", name.removeprefix(prefix + ".")]
        out[name] = next((c for c in candidates if c is not None and c in modules), None)
    return out


def tied_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Module path whose weight is stored -> the module paths that share it (their weights are tied to it):
    BERT-MLM's embeddings -> [its decoder], T5's shared -> [encoder and decoder embed_tokens, lm_head]."""
    tied = tied_weights_keys(model)
    groups: dict[str, list[str]] = {}
    for target, source in tied.items():
        if target.endswith(".weight") and source.endswith(".weight"):
            groups.setdefault(source.removesuffix(".weight"), []).append(target.removesuffix(".weight"))
    return groups


def tie_partners(model: torch.nn.Module) -> dict[str, list[str]]:
    """Every module path of a tied group -> the other paths of its group (whichever of them a checkpoint stores)."""
    partners: dict[str, list[str]] = {}
    for source, targets in tied_groups(model).items():
        group = [source, *targets]
        for path in group:
            partners[path] = [other for other in group if other != path]
    return partners
