"""The manifest: what a zoo checkpoint holds and how it was made (pydantic v2, extra="forbid").

It lives in config.json as `quantization_config`, next to `quant_method: "zoo"`, so transformers
dispatches to zoo's loader. Each safetensors file's `__metadata__` carries `zoo.format_version` and
`zoo.manifest_sha256`, the sha256 of the canonical JSON of the manifest's tensor-describing part
(`format_version` and `modules`), so a lone shard names the manifest it belongs to.

`files` records the sha256 of every file of the checkpoint except config.json itself (which holds
the manifest) and README.md (the model card, regenerated as results arrive). It is empty for a
model re-saved by transformers' save_pretrained, which writes its files after config.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal, TypeGuard, get_args

from pydantic import Field, ValidationError, model_serializer, model_validator

from .codecs import nbytes as codec_nbytes
from .errors import CodecError, ManifestError
from .records import Count, EvalResult, FileInfo  # re-exported: every record of the manifest is importable here
from .records import Record as _Model
from .spec import CODEC_NAMES, CodecSpec, FloatDType

FORMAT_VERSION = 1
QUANT_METHOD = "zoo"
META_FORMAT_VERSION = "zoo.format_version"
META_MANIFEST_SHA256 = "zoo.manifest_sha256"

ModuleKind = Literal["linear", "embedding", "conv", "other"]

# The lists of repeated transformer blocks, by the names architectures give them: BERT/ViT `encoder.layer`,
# wav2vec2/Marian `layers`, T5 `block`, GPT-style `h`. A module inside one (`encoder.layer.3.attention...`) is
# a block module; its linear layers are the `encoder_linear` ones the manifest counts apart, and what a recipe
# rule without `targets` takes. loaders.structure finds the list itself with the same names.
BLOCK_LISTS = ("layer", "layers", "block", "h")
BLOCK_LIST = rf"(^|\.)({'|'.join(BLOCK_LISTS)})"  # matches a block list's name, at the end of a module path
BLOCK_PATTERN = BLOCK_LIST + r"\.\d+\."  # matches a module path inside a block
_BLOCK = re.compile(BLOCK_PATTERN)


def is_encoder_linear(module: str, kind: str) -> bool:
    """A linear layer of a repeated transformer block (encoder or decoder): ModuleEntry.encoder_linear."""
    return kind == "linear" and _BLOCK.search(module) is not None


Dim = Annotated[int, Field(ge=1)]  # a tensor dimension: zero or negative would divide by zero or allocate nonsense


class ModuleEntry(_Model):
    """One compressed module: `<name>.weight` was replaced by `<name>.weight_<key>` tensors."""

    kind: ModuleKind
    encoder_linear: bool = Field(description="a linear layer of a repeated transformer block (is_encoder_linear)")
    shape: list[Dim] = Field(min_length=1, max_length=8)
    dtype: FloatDType = Field(description="dtype of the original weight")
    codec: CodecSpec
    nbytes: Count = Field(description="bytes of the stored tensors")
    tied: list[str] = Field(
        default_factory=list,
        description="modules whose weight the model ties to this one's: stored once, here, and shared at load",
    )

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @model_serializer(mode="wrap")
    def _without_empty_tied(self, handler):
        # `tied` is written only when there is a tie, so the manifests (and shard hashes) of untied models
        # read exactly as before the field existed
        data = handler(self)
        if not self.tied:
            data.pop("tied", None)
        return data


class BaseModelInfo(_Model):
    id: str = Field(description="hub id or local path the model was compressed from")
    revision: str | None = None
    source: Literal["local", "hub", "packaged"]
    architecture: str | None = Field(
        None,
        description="the transformers class the weights fill, which loaders use; config.json's "
        "`architectures` may name one whose head the weights lack",
    )
    weights_sha256: dict[str, str] = Field(description="sha256 of each source weight file")
    weights_nbytes: Count
    card: dict[str, Any] | None = Field(
        None,
        description="what the base model's own card says of it (license, library_name, language, datasets, "
        "tags, pipeline_tag): the compressed model's card keeps it",
    )


class RecipeRecord(_Model):
    name: str
    spec: dict[str, Any] = Field(description="the resolved recipe, as data")


class SizeReport(_Model):
    checkpoint_nbytes: Count = Field(description="bytes of this checkpoint's weight files")
    source_nbytes: Count = Field(description="bytes of the source checkpoint's weight files")
    checkpoint_ratio: float
    encoder_linear_nbytes: Count = Field(description="stored bytes of the transformer blocks' linear weights")
    encoder_linear_fp32_nbytes: Count = Field(description="the same weights at 4 bytes per parameter")
    encoder_linear_ratio: float


FIDELITY_FLOOR = 0.95  # below this cosine, a post-training model is said (CLI, card) to need fine-tuning


class FidelityRecord(_Model):
    """How closely the compressed model follows the dense one, measured as it was written (no labels needed)."""

    metric: Literal["cosine"] = "cosine"
    value: float = Field(
        description="mean cosine of the mean-pooled last hidden states (the base model's, no "
        "head), compressed against dense"
    )
    measured_on: str = Field(description="the texts, e.g. '48 held-out built-in sentences'")
    n_examples: Count
    reference: str = Field(description="the dense model compared with")

    @property
    def faithful(self) -> bool:
        return self.value >= FIDELITY_FLOOR


class TrainingRecord(_Model):
    """How a checkpoint was fine-tuned (`zoo compress --task`); absent for post-training compression."""

    task: str
    dataset: str
    base_model: str = Field(description="the model the user started from")
    teacher: str = Field(description="the dense fine-tuned model distilled from")
    epochs: float
    steps: Count
    seconds: float
    device: str
    keep_layers: list[int] | None = None
    max_length: int | None = Field(None, description="tokens per text example in training and evaluation")
    labels: list[str] | None = Field(
        None, description="the head's label names, in class order (config.json's id2label)"
    )
    # how the job ran; absent from manifests written before zoo trained data-parallel
    world_size: Annotated[int, Field(ge=1)] | None = Field(
        None, description="processes that trained together (torchrun / accelerate launch); 1: one process"
    )
    backend: str | None = Field(None, description="torch.distributed backend (gloo, nccl); None for one process")
    global_batch_size: Annotated[int, Field(ge=1)] | None = Field(
        None, description="examples per optimizer step, over all processes"
    )


class Structure(_Model):
    """Shapes of a pruned model: attention heads and FFN width of every transformer layer, after
    whole heads and FFN neurons were removed. transformers builds the architecture from config.json
    unpruned; the loader (loaders.structure) resizes each layer to these before the weights load."""

    attention_heads: list[Dim] = Field(min_length=1)
    intermediate_sizes: list[Dim] = Field(min_length=1)
    heads_before: int = Field(ge=1, description="heads per layer of the unpruned model")
    intermediate_size_before: int = Field(ge=1, description="FFN width of the unpruned model")

    @model_validator(mode="after")
    def _check(self) -> Structure:
        if len(self.attention_heads) != len(self.intermediate_sizes):
            raise ValueError("attention_heads and intermediate_sizes must list the same layers")
        if not all(1 <= h <= self.heads_before for h in self.attention_heads):
            raise ValueError(f"every layer keeps 1..{self.heads_before} heads")
        if not all(1 <= w <= self.intermediate_size_before for w in self.intermediate_sizes):
            raise ValueError(f"every layer keeps 1..{self.intermediate_size_before} FFN neurons")
        return self


class Manifest(_Model):
    format_version: Annotated[int, Field(strict=True)] = FORMAT_VERSION
    zoo_version: str
    recipe: RecipeRecord
    base_model: BaseModelInfo
    modules: dict[str, ModuleEntry]
    sizes: SizeReport
    files: dict[str, FileInfo] = Field(default_factory=dict)
    evaluation: list[EvalResult] = Field(default_factory=list)
    training: TrainingRecord | None = None
    structure: Structure | None = Field(None, description="per-layer shapes of a pruned model")
    fidelity: FidelityRecord | None = Field(None, description="measured by a post-training compress")
    headers_sha256: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=dict,
        description="sha256 of each weight file's safetensors header (length and JSON): "
        "checked on every open, cheaply, since a header names every tensor's dtype, shape and place",
    )
    config_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of config.json without this quantization_config, as "
        "canonical JSON (config_digest): an edit of the model's settings is caught on every open",
    )

    @model_serializer(mode="wrap")
    def _without_absent(self, handler):
        # written only when present, so manifests made without them read as before
        data = handler(self)
        for key, empty in (("fidelity", None), ("headers_sha256", {}), ("config_sha256", None)):
            if data.get(key) == empty:
                data.pop(key, None)
        return data

    def content_sha256(self) -> str:
        """Hash of what describes the tensors; stored in every shard's metadata."""
        return content_sha256(self.modules, self.format_version)

    def to_quantization_config(self) -> dict[str, Any]:
        return {"quant_method": QUANT_METHOD, **self.model_dump(mode="json")}

    @classmethod
    def from_quantization_config(cls, data: Any, *, where: str = "config.json") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where} has no zoo quantization_config", hint="is this a zoo checkpoint?")
        data = dict(data)
        method = data.pop("quant_method", None)
        if method != QUANT_METHOD:
            raise ManifestError(
                f"{where}: quant_method is {method!r}, not {QUANT_METHOD!r}", hint="is this a zoo checkpoint?"
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: unsupported zoo format_version {version!r} (this zoo reads {FORMAT_VERSION})",
                hint="upgrade zoo-compress: pip install -U zoo-compress",
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(f"{where}: invalid manifest: {_first_problem(exc)}") from None


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of config.json's settings: everything but the quantization_config, as canonical JSON."""
    settings = {k: v for k, v in config.items() if k != "quantization_config"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_sha256(modules: dict[str, ModuleEntry], format_version: int = FORMAT_VERSION) -> str:
    """sha256 of the canonical JSON of {format_version, modules}; known before any tensor is written."""
    core = {
        "format_version": format_version,
        "modules": {name: entry.model_dump(mode="json") for name, entry in modules.items()},
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def shard_metadata(modules: dict[str, ModuleEntry]) -> dict[str, str]:
    """The safetensors __metadata__ every shard of a zoo checkpoint carries."""
    return {META_FORMAT_VERSION: str(FORMAT_VERSION), META_MANIFEST_SHA256: content_sha256(modules)}


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return f"{loc}: unknown codec {tag!r} (known: {', '.join(CODEC_NAMES)})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc}: {err['msg']}{more}"


def _is_float_dtype(name: str) -> TypeGuard[FloatDType]:
    return name in get_args(FloatDType)


def module_entry(
    kind: ModuleKind, encoder_linear: bool, shape, dtype: str, codec: CodecSpec, tied: list[str] | None = None
) -> ModuleEntry:
    """Entry for a module about to be encoded; its byte count comes from the codec's layout."""
    if not _is_float_dtype(dtype):
        raise CodecError(
            f"a weight of dtype {dtype} cannot be compressed: zoo encodes {'/'.join(get_args(FloatDType))}"
        )
    return ModuleEntry(
        kind=kind,
        encoder_linear=encoder_linear,
        shape=list(shape),
        dtype=dtype,
        codec=codec,
        nbytes=codec_nbytes(tuple(shape), codec),
        tied=list(tied or []),
    )
