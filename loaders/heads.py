"""Which transformers class a checkpoint's weights fill.

Sentence-embedding checkpoints on the Hub often keep the `architectures` line of the model they were trained
from (`BertForMaskedLM`) while their weights hold only the encoder and its pooler. Loading the class
config.json names would initialise that head at random and drop the pooler; transformers only logs it. So
zoo compares the weights with the class: when they hold none of its head, the class to load is the base
model (`BertModel`), the model the weights are.

The test is structural and needs no weights: the class is built on the meta device, and its head is every
parameter outside the base model (`model.<base_model_prefix>`), less those tied to another parameter."""

from __future__ import annotations

from pathlib import Path

from zoo.formats import Checkpoint, SafetensorsDir, read_config
from zoo.formats.manifest import QUANT_METHOD

from .compat import tied_weights_keys


def stored_parameter_names(model_dir: str | Path) -> set[str]:
    """The parameters a checkpoint holds: its tensors' names, with a zoo checkpoint's compressed modules (and the
    modules tied to them) counted as their `M.weight`."""
    model_dir = Path(model_dir)
    q = read_config(model_dir).get("quantization_config")
    if not (isinstance(q, dict) and q.get("quant_method") == QUANT_METHOD):
        return set(SafetensorsDir(model_dir).names())
    ckpt = Checkpoint.open(model_dir, verify=False)
    owners = ckpt.stored_owners()
    names = {name for name in ckpt.weights.names() if name not in owners}
    for module, entry in ckpt.manifest.modules.items():
        names |= {f"{t}.weight" for t in [module, *entry.tied]}
    return names


def head_and_base(cls, config) -> tuple[set[str], type | None]:
    """The parameter names of `cls`'s head (outside its base model, untied) and its base model's class (None
    when `cls` has no separate base model: it is one, or it keeps its layers at the top, as T5 does)."""
    import torch

    with torch.device("meta"):
        model = cls(config)
    prefix = getattr(cls, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    if base is None or base is model:
        return set(), None
    tied = tied_weights_keys(model)
    head = {k for k in model.state_dict() if not k.startswith(prefix + ".") and k not in tied}
    return head, type(base)


def weights_class(model_dir: str | Path, cls):
    """`cls`, or its base model's class when the weights in `model_dir` hold none of `cls`'s head."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    head, base = head_and_base(cls, config)
    if base is None or not head:
        return cls
    prefix = cls.base_model_prefix + "."
    stored = {name.removeprefix(prefix) for name in stored_parameter_names(model_dir)}
    return cls if head & stored else base
