"""What kind of layer each weight belongs to, read off the model's own class.

The architecture named in config.json is built on the meta device (no memory, no weights) and
its modules are classified by type, so recipes can say "linear layers" and mean exactly
nn.Linear, whatever the model calls them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from zoo.formats.manifest import ModuleKind
from zoo.loaders.runtime import layer_kind

from .errors import UnsupportedModelError

__all__ = ["layer_kind", "meta_model", "module_kinds"]  # layer_kind: loaders.runtime's, the layers it rebuilds

# layer_kind's answers, as the manifest's kinds; a module it does not name is "other"
_KINDS: dict[str | None, ModuleKind] = {"linear": "linear", "embedding": "embedding", "conv": "conv"}


def meta_model(model_dir: Path):
    """The checkpoint's architecture on the meta device: module names and shapes, no weights."""
    from transformers import AutoConfig, AutoModel

    from zoo.loaders.auto import architecture_class

    config = AutoConfig.from_pretrained(model_dir)
    cls = architecture_class(config)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cls is not None:
            return cls(config)
        return AutoModel.from_config(config)


def module_kinds(
    model_dir: Path, module_names: list[str]
) -> tuple[dict[str, ModuleKind], dict[str, list[tuple[str, str]]]]:
    """Kind ('linear', 'embedding', 'conv', 'other') of each named module of the checkpoint, and for each one
    whose weight the architecture ties to others, those others as (name, kind): they share one tensor, which
    the checkpoint stores once. A partner the checkpoint does not name is given its path in the model."""
    try:
        model = meta_model(model_dir)
    except (ValueError, KeyError, OSError, TypeError, ImportError) as exc:
        raise UnsupportedModelError(
            f"transformers cannot build the architecture in {model_dir / 'config.json'}: {str(exc).splitlines()[0]}",
            hint="zoo reads the model class to tell linear layers from others; "
            "upgrade transformers or check config.json",
        ) from None
    from zoo.loaders.naming import model_paths, tie_partners

    paths = model_paths(model, module_names)
    names_by_path = {path: name for name, path in paths.items() if path}
    partners = tie_partners(model)

    def kind(path: str | None) -> ModuleKind:
        return _KINDS.get(layer_kind(model.get_submodule(path)) if path else None, "other")

    kinds = {name: kind(path) for name, path in paths.items()}
    tied: dict[str, list[tuple[str, str]]] = {
        name: [(names_by_path.get(other, other), kind(other)) for other in partners[path]]
        for name, path in paths.items()
        if path in partners
    }
    return kinds, tied
