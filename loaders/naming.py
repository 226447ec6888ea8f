"""Checkpoint names vs the model's module names.

A checkpoint's module names can differ from the module paths of the class that loads it: the base
prefix may be added or dropped (`encoder.layer.0...` in a BertModel checkpoint is
`bert.encoder.layer.0...` in BertForSequenceClassification), and transformers 5 renames some
architectures' keys on load and back on save (ViT's `encoder.layer.N.attention.attention.query`
is `layers.N.attention.q_proj`). zoo's manifest keeps the checkpoint's names; these functions find
where each one lives in a model, using transformers' own renaming rules."""

from __future__ import annotations

import torch


def _renamed(model: torch.nn.Module, names) -> dict[str, str]:
    """Checkpoint module name -> the name transformers loads its weight under."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # pragma: no cover - a transformers without checkpoint conversion
        return {}
    renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    state = model.state_dict()
    prefix = getattr(model, "base_model_prefix", None) or None
    out = {}
    for name in names:
        key, _ = rename_source_key(f"{name}.weight", renamings, [], prefix, state)
        out[name] = key.removesuffix(".weight")
    return out


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
    tied = getattr(model, "all_tied_weights_keys", None) or {}
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
