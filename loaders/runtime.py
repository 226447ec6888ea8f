"""Runtime modules: what a compressed nn.Linear / nn.Embedding / nn.Conv becomes when loaded.

A runtime module owns its stored tensors as persistent buffers named exactly as in the file
(`weight_packed`, `weight_scale`, `weight_nm_codes`, ...), so transformers loads them as they are
and `save_pretrained` writes the same bytes back. What it computes with depends on the mode,
chosen once after loading (`prepare`):

  materialize  decode once to a dense weight (a non-persistent buffer): dense speed, and the memory
               of the dense layer plus the compressed tensors
  packed       keep only the compressed tensors; decode the weight on every forward (embeddings
               decode only the rows a batch looks up): least memory
  kernel       compute from the compressed form with a real kernel (see loaders/kernels.py); a codec
               with no kernel on the model's device is refused with ModeError

Kronecker factors are never multiplied out, in any mode: a linear layer computes A X B^T products
and an embedding builds only the rows it looks up, so memory falls with the parameters (FLOPs too, by
about m2 / rank for B with m2 rows; see formats/codecs/kronecker.py, kron_linear)
(materialize and kernel decode the factors once; packed decodes them on every forward).

`weight` is available in every mode (decoded on demand unless materialized), so code that reads
`module.weight` keeps working.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from zoo.formats import codecs
from zoo.formats.errors import FormatError
from zoo.formats.manifest import ModuleEntry

from .compat import conv_forward, loaded_from_checkpoint
from .errors import ModeError
from .kernels import Int8Matmul, int_grid, semi_structured

Mode = Literal["materialize", "packed", "kernel"]
MODES: tuple[str, ...] = ("materialize", "packed", "kernel")
DEFAULT_MODE: Mode = "materialize"


def layer_kind(module: torch.nn.Module) -> str | None:
    """'linear', 'embedding' or 'conv' for the layers zoo compresses and rebuilds as runtime modules, else None.
    Exact types for linear and embedding layers: subclasses (quantized or LoRA layers) and transformers'
    transposed Conv1D are not what the runtime modules rebuild; transposed convolutions are not convolutions here."""
    if type(module) is torch.nn.Linear:
        return "linear"
    if type(module) is torch.nn.Embedding:
        return "embedding"
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return "conv"
    return None


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ModeError(f"unknown mode {mode!r}", hint=f"choose one of {', '.join(MODES)}")
    return cast(Mode, mode)  # checked against MODES just above


class ZooModule(torch.nn.Module):
    """Common part of the runtime modules: the stored tensors, decoding, mode bookkeeping.

    A module whose weight the model ties to another one's (BERT-MLM's decoder and word embeddings, T5's
    lm_head and shared embeddings) is built with `owner`: it holds no tensors of its own and computes from
    the owner's stored tensors (and, in materialize mode, the owner's decoded weight), so the weight is
    stored, loaded and saved once."""

    owner: ZooModule | None  # set with object.__setattr__ (not a submodule)
    weight_dense: torch.Tensor  # buffers prepare registers: the decoded weight (materialize)
    kron_a: torch.Tensor  # and the decoded factors of a factored codec (materialize, kernel): A and B
    kron_b: torch.Tensor

    def __init__(self, name: str, entry: ModuleEntry, compute_dtype: torch.dtype, owner: ZooModule | None = None):
        super().__init__()
        self.zoo_name = name
        self.codec = entry.codec
        self.weight_shape = tuple(entry.shape)
        self.compute_dtype = compute_dtype
        self.mode: Mode | None = None
        object.__setattr__(self, "owner", owner)  # not a submodule: its tensors are saved and moved once
        layouts = codecs.layout(self.weight_shape, entry.codec)
        self._keys = list(layouts)
        if owner is None:
            for key, layout in layouts.items():
                self.register_buffer(f"weight_{key}", torch.empty(layout.shape, dtype=layout.dtype, device="meta"))

    def stored(self) -> dict[str, torch.Tensor]:
        if self.owner is not None:
            return self.owner.stored()
        return {key: getattr(self, f"weight_{key}") for key in self._keys}

    def _apply(self, fn, recurse=True):
        # model.to(dtype) / .half() move the stored tensors but never cast them: they are the
        # checkpoint's bytes (a fp16 scale made bf16 loses bits, and save_pretrained would write
        # tensors the manifest does not describe). What the module computes in follows the cast.
        stored = self.stored() if self.owner is None else {}
        super()._apply(fn, recurse)
        for key, before in stored.items():
            after = getattr(self, f"weight_{key}")
            if after.dtype != before.dtype:
                self._buffers[f"weight_{key}"] = before.to(device=after.device)
        probe = fn(torch.empty(0, dtype=self.compute_dtype))
        if probe.is_floating_point():
            self.compute_dtype = probe.dtype
        return self

    def check_loaded(self) -> None:
        """Fail loudly if transformers did not fill every stored tensor from the checkpoint."""
        if self.owner is not None:
            self.owner.check_loaded()
            return
        for key, tensor in self.stored().items():
            if tensor.is_meta or not loaded_from_checkpoint(tensor):
                raise FormatError(
                    f"module {self.zoo_name}: tensor weight_{key} was not loaded from the checkpoint",
                    hint="the checkpoint and its manifest disagree; `zoo info DIR` checks the directory",
                    module=self.zoo_name,
                )

    def decoded_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        weight = codecs.decode_checked(self.stored(), self.codec, self.weight_shape)
        return weight.to(dtype or self.compute_dtype)

    @property
    def weight(self) -> torch.Tensor:
        if self.mode == "materialize" and not self.factored:
            return self.dense_weight()
        return self.decoded_weight()

    def dense_weight(self) -> torch.Tensor:
        """The weight decoded once at load (materialize mode); a tied module reads its owner's."""
        return self.owner.dense_weight() if self.owner is not None else self.weight_dense

    @property
    def factored(self) -> bool:
        """The codec stores factors (Kronecker's) that every mode applies to x directly, never building W."""
        return codecs.codec_for(self.codec).factored

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The factors A, B in the compute dtype: decoded once (materialize, kernel) or now (packed)."""
        if self.mode in ("materialize", "kernel"):
            return (self.owner.kron_a, self.owner.kron_b) if self.owner is not None else (self.kron_a, self.kron_b)
        a, b = codecs.codec_for(self.codec).factors(self.stored(), self.codec, self.weight_shape)
        return a.to(self.compute_dtype), b.to(self.compute_dtype)

    def prepare(self, mode: Mode) -> None:
        """Decode what the mode keeps. A tied module's owner is prepared first and decodes for both."""
        self.mode = mode
        if self.owner is not None:
            if self.owner.mode != mode:
                raise ModeError(
                    f"module {self.zoo_name} shares {self.owner.zoo_name}, which is not prepared for {mode}",
                    module=self.zoo_name,
                )
        elif self.factored:
            if mode != "packed":
                a, b = codecs.codec_for(self.codec).factors(self.stored(), self.codec, self.weight_shape)
                self.register_buffer("kron_a", a.to(self.compute_dtype), persistent=False)
                self.register_buffer("kron_b", b.to(self.compute_dtype), persistent=False)
        elif mode == "materialize":
            self.register_buffer("weight_dense", self.decoded_weight(), persistent=False)

    def no_kernel(self, why: str) -> ModeError:
        return ModeError(
            f"module {self.zoo_name} ({self.codec.describe()}): no kernel {why}",
            hint="load with mode='materialize' (dense speed) or mode='packed' (least memory)",
            module=self.zoo_name,
        )

    def extra_repr(self) -> str:
        shared = f", shares {self.owner.zoo_name}" if self.owner is not None else ""
        return f"{self.codec.describe()}, mode={self.mode}{shared}"


class ZooLinear(ZooModule):
    def __init__(
        self,
        name: str,
        entry: ModuleEntry,
        original: torch.nn.Linear,
        compute_dtype: torch.dtype,
        owner: ZooModule | None = None,
    ):
        super().__init__(name, entry, compute_dtype, owner)
        self.in_features, self.out_features = original.in_features, original.out_features
        self.bias = None
        if original.bias is not None:
            self.bias = torch.nn.Parameter(torch.empty(self.out_features, dtype=compute_dtype, device="meta"))
        self.kernel: Int8Matmul | torch.Tensor | None = None  # what prepare("kernel") builds

    def prepare(self, mode: Mode) -> None:
        super().prepare(mode)
        if mode != "kernel" or self.factored:
            return
        device = next(iter(self.stored().values())).device
        if device.type == "cuda" and codecs.codec_for(self.codec).sparsity_pattern(self.codec) == (2, 4):
            if self.compute_dtype not in (torch.float16, torch.bfloat16):
                raise self.no_kernel(
                    "for 2:4 in float32 (semi-structured kernels take float16/bfloat16; load with dtype=torch.float16)"
                )
            self.kernel = semi_structured(self.decoded_weight())
        elif device.type == "cpu":
            grid = int_grid(self.stored(), self.codec, self.weight_shape)
            if grid is None:
                raise self.no_kernel("on CPU: its values are not on an int8 grid")
            self.kernel = Int8Matmul(grid)
        else:
            raise self.no_kernel(f"on {device.type}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factored:
            return codecs.codec_for(self.codec).factor_linear(x, *self.factors(), self.bias)
        if self.mode == "materialize":
            return F.linear(x, self.dense_weight(), self.bias)
        if self.mode == "kernel":
            if isinstance(self.kernel, Int8Matmul):
                return self.kernel(x, self.bias)
            assert self.kernel is not None, "prepare('kernel') builds a kernel or raises"
            return F.linear(x, self.kernel, self.bias)
        return F.linear(x, self.decoded_weight(x.dtype), self.bias)


class ZooEmbedding(ZooModule):
    """Lookups decode only the rows asked for in packed and kernel mode (for Kronecker factors,
    without building the table)."""

    def __init__(
        self,
        name: str,
        entry: ModuleEntry,
        original: torch.nn.Embedding,
        compute_dtype: torch.dtype,
        owner: ZooModule | None = None,
    ):
        super().__init__(name, entry, compute_dtype, owner)
        self.num_embeddings, self.embedding_dim = original.num_embeddings, original.embedding_dim
        self.padding_idx = original.padding_idx
        self.max_norm, self.norm_type = original.max_norm, original.norm_type
        self.scale_grad_by_freq, self.sparse = original.scale_grad_by_freq, original.sparse

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.mode == "materialize" and not self.factored:
            return F.embedding(
                ids,
                self.dense_weight(),
                self.padding_idx,
                self.max_norm,
                self.norm_type,
                self.scale_grad_by_freq,
                self.sparse,
            )
        if torch.compiler.is_compiling():
            # torch.unique's output size depends on the data, which breaks a compiled graph here (and
            # recompiles the rest per embedding): decoding each looked-up id's row, repeats and all, does not
            rows, inverse = ids.reshape(-1), torch.arange(ids.numel(), device=ids.device).reshape(ids.shape)
        else:
            rows, inverse = torch.unique(ids, return_inverse=True)
        if self.factored and self.mode != "packed":
            table = codecs.codec_for(self.codec).factor_rows(*self.factors(), rows)
        else:
            table = codecs.decode_rows(self.stored(), self.codec, self.weight_shape, rows)
        table = table.to(self.compute_dtype)
        return F.embedding(inverse, table)


class ZooConv(ZooModule):
    """Convolutions (e.g. wav2vec2's feature encoder): materialize or packed; no kernel."""

    _conv: torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d  # set with object.__setattr__ (not a submodule)

    def __init__(
        self,
        name: str,
        entry: ModuleEntry,
        original: torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d,
        compute_dtype,
        owner: ZooModule | None = None,
    ):
        super().__init__(name, entry, compute_dtype, owner)
        # the original module, unregistered, lends its hyperparameters and its convolution (compat.conv_forward)
        object.__setattr__(self, "_conv", original)
        self.bias = None
        if original.bias is not None:
            self.bias = torch.nn.Parameter(torch.empty(original.out_channels, dtype=compute_dtype, device="meta"))

    def prepare(self, mode: Mode) -> None:
        if mode == "kernel":
            raise self.no_kernel("for convolutions")
        super().prepare(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dense_weight() if self.mode == "materialize" else self.decoded_weight(x.dtype)
        return conv_forward(self._conv, x, weight, self.bias)


def runtime_module(
    name: str, entry: ModuleEntry, original: torch.nn.Module, compute_dtype: torch.dtype, owner: ZooModule | None = None
) -> ZooModule:
    """The runtime module replacing `original`; with `owner`, one that shares the owner's stored weight."""
    kind = layer_kind(original)
    runtime = {"linear": ZooLinear, "embedding": ZooEmbedding, "conv": ZooConv}.get(kind) if kind else None
    if runtime is None:
        raise FormatError(
            f"module {name} is a {type(original).__name__}; zoo rebuilds only Linear, Embedding and Conv layers",
            hint="compress it with a recipe that leaves this module dense",
            module=name,
        )
    return runtime(name, entry, original, compute_dtype, owner)
