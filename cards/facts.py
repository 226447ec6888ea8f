"""The facts a card and `zoo info` show, read from a checkpoint's manifest and nothing else.

Every number here comes from the manifest (sizes, modules, evaluation results, training record);
a card or table only formats them. A model with no evaluation has `results.measured == False`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from zoo.formats.codecs import codec_for
from zoo.formats.codecs.base import DTYPES
from zoo.formats.manifest import EvalResult, Manifest

# architecture suffix in config.json -> Hugging Face pipeline tag (the pipeline tag -> Auto class table is
# zoo.loaders.auto.TASKS, which loads the models)
_PIPELINES = (
    ("ForSequenceClassification", "text-classification"),
    ("ForImageClassification", "image-classification"),
    ("ForAudioClassification", "audio-classification"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("MTModel", "translation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("Model", "feature-extraction"),
)


def pipeline_tag(config: dict[str, Any]) -> str:
    arch = (config.get("architectures") or [""])[0]
    for suffix, tag in _PIPELINES:
        if arch.endswith(suffix):
            return tag
    return "feature-extraction"


@dataclass(frozen=True)
class LayerRow:
    module: str
    kind: str
    method: str  # the codec, as `zoo info` names it
    bits: float  # bits per stored value (before sparsity): 4 for int4, log2(3) for ternary...
    sparsity: float  # fraction of weights that are zero by construction (N:M)
    nbytes: int
    bits_per_weight: float  # what the module really costs: stored bytes * 8 / parameters
    ratio: float  # vs the original dtype
    tied: list[str] = field(default_factory=list)  # modules sharing this stored weight (stored once, here)


def value_bits(codec) -> float:
    """Bits per stored value, before sparsity (the codec's own answer)."""
    return codec_for(codec).value_bits(codec)


def sparsity(codec) -> float:
    return codec_for(codec).sparsity(codec)


def natural_key(name: str) -> list:
    """Sort key that puts layer.2 before layer.10: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def layer_rows(manifest: Manifest) -> list[LayerRow]:
    """Every compressed module, in natural order (layer.2 before layer.10)."""
    rows = []
    for name in sorted(manifest.modules, key=natural_key):
        e = manifest.modules[name]
        original = e.numel * DTYPES[e.dtype].itemsize
        rows.append(
            LayerRow(
                module=name,
                kind=e.kind,
                method=e.codec.describe(),
                bits=value_bits(e.codec),
                sparsity=sparsity(e.codec),
                nbytes=e.nbytes,
                bits_per_weight=e.nbytes * 8 / e.numel,
                ratio=original / e.nbytes,
                tied=list(e.tied),
            )
        )
    return rows


@dataclass(frozen=True)
class ResultRow:
    """One model of the results table: the dense teacher or the compressed checkpoint."""

    model: str
    role: str
    metric: str | None
    value: float | None
    retention: float | None  # compressed value / teacher value
    size_bytes: int
    checkpoint_ratio: float
    encoder_linear_ratio: float


@dataclass(frozen=True)
class Results:
    task: str | None
    dataset: str | None
    split: str | None
    n_examples: int | None
    rows: list[ResultRow]
    agreement: float | None = None
    extra: list[EvalResult] = field(default_factory=list)  # every other recorded result (e.g. validation)

    @property
    def measured(self) -> bool:
        return any(r.value is not None for r in self.rows)

    @property
    def metric(self) -> str | None:
        """The metric of the compressed model's headline result (None when nothing is measured)."""
        return self.row("compressed").metric

    def row(self, role: str) -> ResultRow:
        return next(r for r in self.rows if r.role == role)


def headline(evaluation: list[EvalResult]) -> tuple[EvalResult | None, EvalResult | None]:
    """The compressed model's primary result (test split preferred) and the teacher's on the same split."""
    candidates = [r for r in evaluation if r.role == "compressed" and r.metric != "teacher_agreement"]
    if not candidates:
        return None, None
    order = {"test": 0, "validation": 1}
    best = min(candidates, key=lambda r: order.get(r.split, 2))
    teacher = next(
        (
            r
            for r in evaluation
            if r.role == "teacher"
            and (r.task, r.dataset, r.split, r.metric) == (best.task, best.dataset, best.split, best.metric)
        ),
        None,
    )
    return best, teacher


def results(manifest: Manifest) -> Results:
    s = manifest.sizes
    compressed, teacher = headline(manifest.evaluation)
    teacher_name = manifest.training.teacher if manifest.training else manifest.base_model.id
    rows = [
        ResultRow(
            model=f"dense teacher ({teacher_name})",
            role="teacher",
            metric=teacher.metric if teacher else None,
            value=teacher.value if teacher else None,
            retention=1.0 if teacher else None,
            size_bytes=s.source_nbytes,
            checkpoint_ratio=1.0,
            encoder_linear_ratio=1.0,
        ),
        ResultRow(
            model=f"zoo {manifest.recipe.name}",
            role="compressed",
            metric=compressed.metric if compressed else None,
            value=compressed.value if compressed else None,
            retention=compressed.value / teacher.value if compressed and teacher and teacher.value else None,
            size_bytes=s.checkpoint_nbytes,
            checkpoint_ratio=s.checkpoint_ratio,
            encoder_linear_ratio=s.encoder_linear_ratio,
        ),
    ]
    agreement = next(
        (
            r.value
            for r in manifest.evaluation
            if r.metric == "teacher_agreement" and compressed is not None and r.split == compressed.split
        ),
        None,
    )
    used = {id(compressed), id(teacher)}
    extra = [r for r in manifest.evaluation if id(r) not in used and r.metric != "teacher_agreement"]
    return Results(
        task=compressed.task if compressed else None,
        dataset=compressed.dataset if compressed else None,
        split=compressed.split if compressed else None,
        n_examples=compressed.n_examples if compressed else None,
        rows=rows,
        agreement=agreement,
        extra=extra,
    )


def other_tensors_nbytes(manifest: Manifest) -> int:
    """Bytes of everything no codec stores (norms, biases, heads and any layer no rule took) and file headers."""
    return manifest.sizes.checkpoint_nbytes - sum(e.nbytes for e in manifest.modules.values())


def methods(manifest: Manifest) -> list[str]:
    """Short tags for the compression methods a checkpoint uses (for card tags and tables)."""
    tags = {tag for e in manifest.modules.values() for tag in codec_for(e.codec).tags(e.codec)}
    if manifest.training and manifest.training.keep_layers:
        tags.add("layer-reduction")
    if manifest.training:
        tags.add("distillation")
    return sorted(tags)
