"""What kind of layer each weight belongs to, read off the model's own class.

The architecture named in config.json is built on the meta device (no memory, no weights) and
its modules are classified by type, so recipes can say "linear layers" and mean exactly
nn.Linear, whatever the model calls them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import UnsupportedModelError


def layer_kind(module: torch.nn.Module) -> str | None:
    # exact types: subclasses (quantized or LoRA layers) and transformers' transposed Conv1D are not
    # what zoo's runtime modules rebuild
    if type(module) is torch.nn.Linear:
        return "linear"
    if type(module) is torch.nn.Embedding:
        return "embedding"
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return "conv"
    return None


def meta_model(model_dir: Path):
    """The checkpoint's architecture on the meta device: module names and shapes, no weights."""
    import transformers
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cls is not None:
            return cls(config)
        return AutoModel.from_config(config)


def module_kinds(model_dir: Path, module_names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Kind ('linear', 'embedding', 'conv', 'other') of each named module of the checkpoint, and the
    modules whose weight the architecture ties to another (name -> what it is tied to)."""
    try:
        model = meta_model(model_dir)
    except (ValueError, KeyError, OSError, TypeError, ImportError) as exc:
        raise UnsupportedModelError(
            f"transformers cannot build the architecture in {model_dir / 'config.json'}: {str(exc).splitlines()[0]}",
            hint="zoo reads the model class to tell linear layers from others; upgrade transformers or check config.json",
        ) from None
    from loaders.naming import model_paths, tied_modules

    paths = model_paths(model, module_names)
    tied_paths = tied_modules(model)
    kinds = {name: (layer_kind(model.get_submodule(path)) if path else None) or "other" for name, path in paths.items()}
    tied = {name: tied_paths[path] for name, path in paths.items() if path in tied_paths}
    return kinds, tied
