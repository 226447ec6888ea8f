"""Pruned transformer layers: attention heads and FFN neurons physically removed, per layer.

transformers 5 has no `pruned_heads`, so zoo records the shapes itself: a checkpoint whose
manifest has a `structure` (heads and FFN width of every layer) is rebuilt by `resize` on the
meta device before its weights load, and `zoo compress` uses the same `resize` on real weights to
remove what block pruning switched off. Supported layers: BERT-style (attention.self.query/key/
value, attention.output.dense, intermediate.dense, output.dense) and the q_proj/k_proj/v_proj/
o_proj (or out_proj) + intermediate/fc1 and output/fc2 naming of ViT, wav2vec2 and similar
encoders."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from zoo.formats.manifest import BLOCK_LIST

from .errors import StructureError

_LAYER_LIST = re.compile(BLOCK_LIST + "$")
_Q, _K, _V = ("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")
_O = ("attention.output.dense", "o_proj", "out_proj")
_FFN_IN = ("intermediate.dense", "intermediate_dense", "fc1")
_FFN_OUT = ("output.dense", "output_dense", "fc2")
_HEADS = ("num_attention_heads", "num_heads")
_HEAD_SIZE = ("attention_head_size", "head_dim", "head_size")


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the transformer blocks (encoder.layer for BERT, encoder.layers, block...)."""
    lists = [
        (name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and _LAYER_LIST.search(name)
    ]
    if len(lists) != 1:
        found = ", ".join(name for name, _ in lists) or "none"
        raise StructureError(
            f"zoo needs exactly one list of transformer layers, found {found}",
            hint="layer reduction and pruning support encoder-only models (BERT, ViT, wav2vec2...)",
        )
    return lists[0]


@dataclass(frozen=True)
class LayerParts:
    """Paths, relative to one transformer layer, of what pruning touches."""

    attention: str  # the module holding the head count (parent of q)
    q: str
    k: str
    v: str
    o: str
    ffn_in: str
    ffn_out: str


def _find(names: list[str], suffixes: Sequence[str], *, exclude: str | None = None) -> str | None:
    hits = [n for n in names if any(n == s or n.endswith("." + s) for s in suffixes) and not (exclude and exclude in n)]
    return hits[0] if len(hits) == 1 else None


def layer_parts(layer: nn.Module) -> LayerParts:
    names = [n for n, m in layer.named_modules() if type(m) is nn.Linear]
    q, k, v = (_find(names, s) for s in (_Q, _K, _V))
    o = _find(names, _O)
    ffn_in = _find(names, _FFN_IN)
    ffn_out = _find(names, _FFN_OUT, exclude="attention")
    found = {"q": q, "k": k, "v": v, "o": o, "ffn_in": ffn_in, "ffn_out": ffn_out}
    if q is None or k is None or v is None or o is None or ffn_in is None or ffn_out is None:
        missing = ", ".join(key for key, value in found.items() if value is None)
        raise StructureError(
            f"{type(layer).__name__}: cannot find its {missing} projection(s) among {', '.join(names)}",
            hint="pruning supports BERT-, ViT- and wav2vec2-style encoder layers",
        )
    return LayerParts(attention=q.rpartition(".")[0], q=q, k=k, v=v, o=o, ffn_in=ffn_in, ffn_out=ffn_out)


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    """The projection at `path` of a LayerParts: layer_parts names only nn.Linear modules."""
    module = layer.get_submodule(path)
    assert isinstance(module, nn.Linear), f"{path} is a {type(module).__name__}, not the Linear layer_parts found"
    return module


def head_count(attention: nn.Module) -> int:
    for key in _HEADS:
        if isinstance(getattr(attention, key, None), int):
            return getattr(attention, key)
    raise StructureError(f"{type(attention).__name__} has no head count ({' or '.join(_HEADS)})")


def head_size(attention: nn.Module) -> int:
    for key in _HEAD_SIZE:
        if isinstance(getattr(attention, key, None), int):
            return getattr(attention, key)
    raise StructureError(f"{type(attention).__name__} has no head size ({' or '.join(_HEAD_SIZE)})")


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _sliced(linear: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new Linear with the kept output rows / input columns of `linear` (works on the meta device)."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
        bias = bias.index_select(0, rows.to(weight.device)) if bias is not None else None
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight = nn.Parameter(weight.contiguous(), requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.contiguous(), requires_grad=linear.bias.requires_grad)
    return new


def resize(layer: nn.Module, heads: Sequence[int], neurons: Sequence[int]) -> None:
    """Keep only attention heads `heads` and FFN neurons `neurons` (indices, ascending) of `layer`, in place."""
    parts = layer_parts(layer)
    attention = layer.get_submodule(parts.attention)
    size, total = head_size(attention), head_count(attention)
    width = _linear(layer, parts.ffn_in).out_features
    if not heads or not neurons:
        raise StructureError("a pruned layer keeps at least one attention head and one FFN neuron")
    if list(heads) != sorted(set(heads)) or heads[-1] >= total or heads[0] < 0:
        raise StructureError(f"heads to keep must be distinct ascending indices below {total}, got {list(heads)}")
    if list(neurons) != sorted(set(neurons)) or neurons[-1] >= width or neurons[0] < 0:
        raise StructureError(f"FFN neurons to keep must be distinct ascending indices below {width}")
    head_rows = (torch.as_tensor(heads).unsqueeze(1) * size + torch.arange(size)).reshape(-1)
    kept = torch.as_tensor(neurons)
    for path in (parts.q, parts.k, parts.v):
        _set(layer, path, _sliced(_linear(layer, path), head_rows, None))
    _set(layer, parts.o, _sliced(_linear(layer, parts.o), None, head_rows))
    _set(layer, parts.ffn_in, _sliced(_linear(layer, parts.ffn_in), kept, None))
    _set(layer, parts.ffn_out, _sliced(_linear(layer, parts.ffn_out), None, kept))
    for key in _HEADS:
        if isinstance(getattr(attention, key, None), int):
            setattr(attention, key, len(heads))
    if isinstance(getattr(attention, "all_head_size", None), int):
        attention.all_head_size = len(heads) * size  # type: ignore[assignment]  # torch's stub: Tensor | Module only


def apply_structure(model: nn.Module, heads: Sequence[int], widths: Sequence[int]) -> None:
    """Give layer i `heads[i]` attention heads and an FFN `widths[i]` wide (the first ones kept):
    how a loader rebuilds a pruned checkpoint's shapes before its weights load."""
    _, layers = layer_list(model)
    if len(heads) != len(layers) or len(widths) != len(layers):
        raise StructureError(
            f"the checkpoint records the structure of {len(heads)} layers; {type(model).__name__} has {len(layers)}",
            hint="load with the architecture the checkpoint was compressed from",
        )
    for layer, n, width in zip(layers, heads, widths, strict=True):
        resize(layer, range(n), range(width))


def structure_of(model: nn.Module) -> tuple[list[int], list[int]]:
    """Heads and FFN width of every layer, as the model is now."""
    _, layers = layer_list(model)
    heads, widths = [], []
    for layer in layers:
        parts = layer_parts(layer)
        attention = layer.get_submodule(parts.attention)
        heads.append(_linear(layer, parts.q).out_features // head_size(attention))
        widths.append(_linear(layer, parts.ffn_in).out_features)
    return heads, widths


_LAYER_INDEX = re.compile(BLOCK_LIST + r"\.(\d+)\.(.+)\.(weight|bias)$")


def padded(
    name: str, tensor: torch.Tensor, heads: Sequence[int], widths: Sequence[int], heads_before: int, width_before: int
) -> torch.Tensor:
    """A pruned layer's tensor zero-padded back to the unpruned shape (for a plain dense export).
    Exact: a padded head has zero value and output weights, a padded FFN neuron zero output weights."""
    match = _LAYER_INDEX.search(name)
    if match is None:
        return tensor
    layer, part, kind = int(match.group(3)), match.group(4), match.group(5)

    def is_(suffixes, exclude=None):
        return any(part == s or part.endswith("." + s) for s in suffixes) and not (exclude and exclude in part)

    if layer >= len(heads):
        return tensor
    if is_(_Q + _K + _V):  # rows: heads
        size = tensor.shape[0] // heads[layer]
        return _pad(tensor, 0, heads_before * size)
    if is_(_O) and kind == "weight":  # columns: heads
        size = tensor.shape[1] // heads[layer]
        return _pad(tensor, 1, heads_before * size)
    if is_(_FFN_IN):
        return _pad(tensor, 0, width_before)
    if is_(_FFN_OUT, exclude="attention") and kind == "weight":
        return _pad(tensor, 1, width_before)
    return tensor


def _pad(tensor: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = size - shape[dim]
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


__all__ = [
    "LayerParts",
    "StructureError",
    "apply_structure",
    "head_count",
    "head_size",
    "layer_list",
    "layer_parts",
    "padded",
    "resize",
    "structure_of",
]
