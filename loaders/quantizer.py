"""zoo as a transformers quantization method: `quant_method: "zoo"` in config.json.

`ZooConfig` carries the manifest (and, when a user passes one to `from_pretrained`, a load-time
`mode`); `ZooHfQuantizer` resizes the layers of a pruned model (the manifest's `structure`) and swaps
every module the manifest names for a runtime module before the weights load, then checks that each was filled
from the checkpoint and prepares it for its mode.

    import zoo.loaders  # or: import zoo
    model = AutoModel.from_pretrained("minilm-4bit-2of4")                                  # materialize
    model = AutoModel.from_pretrained("minilm-4bit-2of4", quantization_config=ZooConfig(mode="packed"))
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from zoo.formats import Checkpoint, Manifest
from zoo.formats.codecs.base import DTYPES
from zoo.formats.errors import FormatError, ZooError
from zoo.formats.manifest import QUANT_METHOD
from zoo.formats.memory import release_freed_memory

from .compat import HfQuantizer, QuantizationConfigMixin, register_quantization_method, tied_weights_keys
from .naming import model_paths, tie_partners
from .runtime import DEFAULT_MODE, ModeError, ZooModule, check_mode, runtime_module
from .structure import apply_structure


class ZooConfig(QuantizationConfigMixin):
    """The manifest of a zoo checkpoint, as transformers sees it; `mode` is a load-time choice
    (materialize, packed, kernel) that is never written back to config.json."""

    def __init__(self, mode: str | None = None, **manifest: Any):
        self.quant_method = QUANT_METHOD  # type: ignore[assignment]  # registered methods are named by plain str
        self.mode = check_mode(mode) if mode is not None else None
        manifest.pop("quant_method", None)
        self.manifest = (
            Manifest.from_quantization_config({"quant_method": QUANT_METHOD, **manifest}) if manifest else None
        )
        self._dumped: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.manifest is None:
            return {"quant_method": QUANT_METHOD, "mode": self.mode}
        # A model saved by transformers gets new files, written after config.json: their hashes
        # cannot be recorded here, so the manifest of a re-saved model lists none. Dumped once:
        # transformers formats the config (and so this) for its log lines on every load.
        if self._dumped is None:
            self._dumped = self.manifest.model_dump(mode="json", exclude={"files"})
        return {"quant_method": QUANT_METHOD, **copy.deepcopy(self._dumped), "files": {}}

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def get_loading_attributes(self) -> dict[str, Any]:
        return {"mode": self.mode} if self.mode is not None else {}

    def __repr__(self) -> str:
        modules = len(self.manifest.modules) if self.manifest else 0
        return f"ZooConfig(mode={self.mode!r}, modules={modules})"


def _replace(model: torch.nn.Module, path: str, new: torch.nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class ZooHfQuantizer(HfQuantizer):
    requires_calibration = True  # zoo checkpoints are made by `zoo compress`, never quantized on load
    quantization_config: ZooConfig  # transformers dispatches `quant_method: "zoo"` to this pair only

    def __init__(self, quantization_config: ZooConfig, **kwargs):
        if not kwargs.get("pre_quantized", True):
            raise ZooError(
                "this model is not a zoo checkpoint; zoo does not quantize while loading",
                hint="compress it first: zoo compress MODEL --recipe 4bit-2of4",
            )
        super().__init__(quantization_config, **kwargs)
        self.modules: dict[str, str] = {}  # manifest name -> model module name
        self.shared: dict[str, str] = {}  # module tied to a compressed one -> the path of the one it shares
        self.untied: dict[str, str] = {}  # transformers' tie entries zoo took over (restored by dequantize)
        self.stored_dtypes: dict[str, torch.dtype] = {}  # plain float tensors of the file -> their dtype there

    @property
    def mode(self) -> str:
        return self.quantization_config.mode or DEFAULT_MODE

    def validate_environment(self, device_map=None, **kwargs) -> None:
        if self.quantization_config.manifest is None:
            raise ZooError("a zoo checkpoint's config.json must hold its manifest")
        check_mode(self.mode)
        if isinstance(device_map, dict) and len(set(map(str, device_map.values()))) > 1:
            raise ZooError(
                "zoo checkpoints load onto one device; device_map splits the model",
                hint="pass device_map='cpu' or 'cuda', or none",
            )

    def _process_model_before_weight_loading(self, model, dtype=None, checkpoint_files=None, **kwargs):
        if checkpoint_files:
            # names, shapes, dtypes and the shards' manifest hash, before a byte is loaded
            ckpt = Checkpoint.open(Path(checkpoint_files[0]).parent, verify=False)
            owned = ckpt.stored_owners()
            self.stored_dtypes = {
                name: DTYPES[ckpt.weights.dtype(name)]
                for name in ckpt.weights.names()
                if name not in owned and ckpt.weights.dtype(name) in DTYPES
            }
        manifest = self.quantization_config.manifest
        if manifest.structure is not None:  # a pruned model: its layers' shapes first
            _check_structure(model.config, manifest.structure)
            apply_structure(model, manifest.structure.attention_heads, manifest.structure.intermediate_sizes)
        modules = manifest.modules
        # every name at once, before any swap: each call renames through transformers' conversion mapping and the
        # model's state dict, a cost per call, not per name
        tied_names = sorted({t for entry in modules.values() for t in entry.tied} - set(modules))
        resolved = model_paths(model, [*modules, *tied_names])  # the names the manifest records as tied, too
        paths = {name: resolved[name] for name in modules}
        _check_shapes(model, modules, paths)
        partners = tie_partners(model)
        stored_here = {path for path in paths.values() if path}  # a partner with tensors of its own keeps them
        for name, entry in modules.items():
            path = paths[name]
            if path is None:
                raise FormatError(
                    f"module {name} named by the manifest does not exist in {type(model).__name__}",
                    hint="load with the architecture the checkpoint was compressed from (zoo.from_pretrained picks it)",
                )
            owner = _swap(model, path, name, entry, dtype)
            self.modules[name] = path
            # the modules the model ties to this one (and those the manifest says were stored with it) share it
            recorded = {resolved[t] for t in entry.tied}
            for other in sorted((set(partners.get(path, [])) | {p for p in recorded if p}) - stored_here):
                _swap(model, other, other, entry, dtype, owner)
                self.shared[other] = path
        self._take_over_ties(model)
        return model

    def _take_over_ties(self, model) -> None:
        """transformers would tie the shared modules' `weight` Parameters after loading; zoo's runtime modules
        share their stored tensors instead, so those tie entries are taken out of the model's tie map."""
        tied = tied_weights_keys(model)
        if not tied:
            return
        ours = {f"{path}.weight" for path in [*self.shared, *self.shared.values()]}
        for target, source in list(tied.items()):
            if target in ours or source in ours:
                self.untied[target] = tied.pop(target)

    def _process_model_after_weight_loading(self, model, **kwargs):
        rebuilt = {name for name, module in model.named_modules() if isinstance(module, ZooModule)}
        missing = sorted(n for n, path in self.modules.items() if path not in rebuilt)
        if missing or len(self.modules) != len(self.quantization_config.manifest.modules):
            raise FormatError(f"modules named by the manifest were not rebuilt: {', '.join(missing) or 'unknown'}")
        for path in [*self.modules.values(), *self.shared]:  # owners first: a shared module uses what they decode
            module = model.get_submodule(path)
            module.check_loaded()
            module.prepare(self.mode)
        release_freed_memory()  # the decoding temporaries
        return model

    def is_serializable(self, safe_serialization=None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    def get_state_dict_and_metadata(self, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor] | None, dict]:
        # The stored tensors are persistent buffers, so the model's own state dict is the compact one, but for
        # the plain tensors the checkpoint stored in a smaller float dtype (a recipe's dense_dtype: norms,
        # biases, heads in fp16), which transformers loaded into the model's dtype: they go back as stored.
        # No zoo metadata: with more than transformers' own {"format": "pt"}, safetensors 0.8 writes
        # the keys in random order and re-saves would not be byte-identical (safetensors issue #584).
        state = model.state_dict()
        prefix = getattr(model, "base_model_prefix", "") or ""

        def storage(tensor: torch.Tensor) -> tuple:  # tied tensors: one storage under several names
            return tensor.data_ptr(), tuple(tensor.shape), tensor.stride()

        cast: dict[tuple, torch.Tensor] = {}
        for key, tensor in state.items():
            want = next(
                (
                    self.stored_dtypes[k]
                    for k in (key, key.removeprefix(prefix + "."), f"{prefix}.{key}")
                    if k in self.stored_dtypes
                ),
                None,
            )
            if want is not None and tensor.is_floating_point() and tensor.dtype != want:
                cast.setdefault(storage(tensor), tensor.to(want))
        changed = False
        for key, tensor in state.items():
            if storage(tensor) in cast:
                state[key] = cast[storage(tensor)]
                changed = True
        return (state if changed else None), {}

    def _dequantize(self, model, dtype=None):
        if isinstance(dtype, str):  # transformers passes model.config.dtype: a string once save_pretrained ran
            dtype = getattr(torch, dtype)
        dense = {}
        for path in self.modules.values():
            dense[path] = dense_module(model.get_submodule(path), dtype)
            _replace(model, path, dense[path])
        for path, owner in self.shared.items():  # tied again: one Parameter, as transformers ties them
            _replace(model, path, dense_module(model.get_submodule(path), dtype, weight=dense[owner].weight))
        tied_weights_keys(model).update(self.untied)
        return model


def _check_structure(config, structure) -> None:
    """A pruned model's layer shapes must fit the architecture config.json describes: they are built before any
    weight is read, so sizes out of bounds would allocate without limit."""
    want = {
        "layers": getattr(config, "num_hidden_layers", None),
        "heads": getattr(config, "num_attention_heads", None),
        "FFN width": getattr(config, "intermediate_size", None),
    }
    have = {
        "layers": len(structure.attention_heads),
        "heads": structure.heads_before,
        "FFN width": structure.intermediate_size_before,
    }
    wrong = [f"{k} {have[k]} (config.json: {want[k]})" for k in want if want[k] is not None and have[k] != want[k]]
    if wrong:
        raise FormatError(
            f"the manifest's pruned structure does not fit config.json: {', '.join(wrong)}",
            hint="the checkpoint was edited or its files mixed from different models",
        )


def _check_shapes(model, modules, paths) -> None:
    """Every compressed module's recorded shape must be its layer's in the model config.json builds (on the meta
    device, before any allocation): a decoded weight of another shape would be allocated, then fail or misbehave."""
    for name, entry in modules.items():
        path = paths.get(name)
        weight = getattr(model.get_submodule(path), "weight", None) if path else None
        if weight is not None and tuple(weight.shape) != tuple(entry.shape):
            raise FormatError(
                f"module {name}: the manifest records shape {list(entry.shape)}, but the model config.json "
                f"describes has {list(weight.shape)}",
                hint="the checkpoint was edited or its files mixed from different models",
            )


def _swap(model, path: str, name: str, entry, dtype, owner: ZooModule | None = None) -> ZooModule:
    """Replace the module at `path` by its runtime module (one sharing `owner`'s tensors, if given)."""
    original = model.get_submodule(path)
    # Compute in the dtype the layer was built in (from_pretrained's `dtype`, or fp32 where the
    # model keeps a module in fp32): transformers' preprocess_model does not pass `dtype` on.
    weight = getattr(original, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.is_floating_point():
        compute_dtype = weight.dtype
    else:
        compute_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
    with torch.device("meta"):
        module = runtime_module(name, entry, original, compute_dtype, owner)
    _replace(model, path, module)
    return module


def dense_module(
    module: ZooModule, dtype: torch.dtype | None, weight: torch.nn.Parameter | None = None
) -> torch.nn.Module:
    """A plain torch module with the decoded weight of a runtime module (or `weight` itself, to share it)."""
    from .runtime import ZooConv, ZooEmbedding, ZooLinear

    value = module.decoded_weight(dtype) if weight is None else weight
    bias = getattr(module, "bias", None)
    dense: torch.nn.Linear | torch.nn.Embedding | torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d
    if isinstance(module, ZooLinear):
        dense = torch.nn.Linear(module.in_features, module.out_features, bias=bias is not None, device="meta")
    elif isinstance(module, ZooEmbedding):
        dense = torch.nn.Embedding(
            module.num_embeddings,
            module.embedding_dim,
            padding_idx=module.padding_idx,
            max_norm=module.max_norm,
            norm_type=module.norm_type,
            scale_grad_by_freq=module.scale_grad_by_freq,
            sparse=module.sparse,
            device="meta",
        )
    elif isinstance(module, ZooConv):
        dense = module._conv
    else:  # pragma: no cover - every runtime module type is listed above
        raise TypeError(type(module))
    dense.weight = value if isinstance(value, torch.nn.Parameter) else torch.nn.Parameter(value)
    if bias is not None:
        dense.bias = torch.nn.Parameter(bias.detach().to(value.dtype))
    return dense


def register() -> None:
    """Make transformers dispatch `quant_method: "zoo"` to zoo (idempotent); a ZooConfig passed to from_pretrained
    chooses the `mode`."""
    register_quantization_method(QUANT_METHOD, ZooConfig, ZooHfQuantizer)


__all__ = ["ModeError", "ZooConfig", "ZooHfQuantizer", "dense_module", "register"]
