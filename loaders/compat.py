"""Every internal of transformers (and torch) that zoo relies on, in one place.

zoo plugs into transformers as a quantization method, which transformers has no public API for beyond
`register_quantization_config` / `register_quantizer`: the rest is module-level tables, private hooks of
`HfQuantizer`, a flag on loaded tensors and the key renaming of its checkpoint loader. Each is reached through
this module only, and tests/loaders/test_compat.py checks each one still exists with the shape used here, so a
transformers release that moves one fails there by name rather than somewhere in a load. pyproject caps
transformers below its next major version.

(`zoo._register` hooks `sys.meta_path` so that `import zoo` registers the method once transformers is
imported; it names transformers only as a module name, so it stays in zoo, which must not import transformers.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers.quantizers import auto as _auto
from transformers.quantizers import register_quantization_config, register_quantizer
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

# Private methods that zoo's subclasses override, with the parameters zoo's overrides take (after self):
# transformers' public preprocess_model / postprocess_model / dequantize call the first three, and torch's
# Module.to / .half / .cuda call `_apply`.
OVERRIDDEN: dict[type, dict[str, tuple[str, ...]]] = {
    HfQuantizer: {
        "_process_model_before_weight_loading": ("model",),
        "_process_model_after_weight_loading": ("model",),
        "_dequantize": ("model", "dtype"),
    },
    torch.nn.Module: {"_apply": ("fn", "recurse")},
}


def register_quantization_method(name: str, config_class: type, quantizer_class: type) -> None:
    """Make transformers dispatch `quant_method: name` to these classes (idempotent), and let a config of
    `config_class` passed to from_pretrained add its loading attributes (zoo's `mode`) to the checkpoint's."""
    if name not in _auto.AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(name)(config_class)
    if name not in _auto.AUTO_QUANTIZER_MAPPING:
        register_quantizer(name)(quantizer_class)
    # transformers applies a `quantization_config` passed to from_pretrained on top of the checkpoint's only for
    # the config types in this tuple
    if config_class not in _auto.LOADING_ATTRIBUTES_CONFIG_TYPES:
        _auto.LOADING_ATTRIBUTES_CONFIG_TYPES = (  # type: ignore[assignment]  # typed as its own classes only
            *_auto.LOADING_ATTRIBUTES_CONFIG_TYPES,
            config_class,
        )


def tied_weights_keys(model: torch.nn.Module) -> dict[str, str]:
    """The model's map of tied parameters, target name -> source name (BERT-MLM's decoder.weight -> its word
    embeddings'): the model's own dict, so that edits reach transformers; a new empty one for a model without."""
    keys = getattr(model, "all_tied_weights_keys", None)
    return keys if isinstance(keys, dict) else {}


def loaded_from_checkpoint(tensor: torch.Tensor) -> bool:
    """Whether transformers' loader filled `tensor` from the checkpoint (it flags every tensor it loads)."""
    return bool(getattr(tensor, "_is_hf_initialized", False))


def renamed_keys(model: torch.nn.Module, keys: Iterable[str]) -> dict[str, str]:
    """Checkpoint key -> the key transformers loads it under in `model` (transformers 5 renames some
    architectures' keys on load, ViT's `attention.attention.query` to `attention.q_proj`)."""
    keys = list(keys)
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # pragma: no cover - a transformers without checkpoint conversion: nothing is renamed
        return {key: key for key in keys}
    # annotated PreTrainedModel, it looks for PreTrainedModels among any Module's submodules
    mapping = get_model_conversion_mapping(model)  # type: ignore[arg-type]
    renamings = [t for t in mapping if isinstance(t, WeightRenaming)]
    state = model.state_dict()
    prefix = getattr(model, "base_model_prefix", None) or None
    return {key: rename_source_key(key, renamings, [], prefix, state)[0] for key in keys}


def conv_forward(
    conv: torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """`conv`'s own convolution (its stride, padding, dilation, groups, padding mode) with another weight."""
    return conv._conv_forward(x, weight, bias)


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 (m, k) x int8 (k, n) -> int32 (m, n), in one kernel."""
    return torch._int_mm(a, b)


__all__ = [
    "OVERRIDDEN",
    "HfQuantizer",
    "QuantizationConfigMixin",
    "conv_forward",
    "int8_matmul",
    "loaded_from_checkpoint",
    "register_quantization_method",
    "renamed_keys",
    "tied_weights_keys",
]
