"""`zoo eval`: a model directory on a task split, or its fidelity to the dense model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.formats.errors import FormatError
from zoo.formats.manifest import QUANT_METHOD
from zoo.formats.reader import read_config
from zoo.formats.writer import output_mark

from .base import TaskError
from .text import DEFAULT_MAX_LENGTH


def _load(model_dir: Path, auto_task: str | None, mode: str):
    """The model, and the names of the parameters transformers had to initialise (a head the weights lack)."""
    from zoo.loaders import load, quiet_transformers

    with quiet_transformers():
        model, info = load(model_dir, task=auto_task, mode=mode, new_head=True, output_loading_info=True)
    return model, sorted(info.get("missing_keys") or [])


def _default_reference(model_dir: Path) -> str:
    q = read_config(model_dir).get("quantization_config")
    if not (isinstance(q, dict) and q.get("quant_method") == QUANT_METHOD):
        raise TaskError(
            f"{model_dir} is not a zoo checkpoint, so it has no dense reference",
            hint="pass --reference DIR (the dense model to compare with)",
        )
    training = q.get("training") or {}
    return training.get("teacher") or q["base_model"]["id"]


def trained_length(model_dir: Path) -> int | None:
    """The tokens per example a model was fine-tuned and scored with, as zoo recorded it: in a `zoo finetune`
    output's mark, or a zoo checkpoint's training record. None when zoo did not train it."""
    length = (output_mark(model_dir).get("training") or {}).get("max_length")
    if length is None:
        try:
            q = read_config(Path(model_dir)).get("quantization_config")
        except FormatError:
            q = None
        length = ((q.get("training") or {}).get("max_length")) if isinstance(q, dict) else None
    return length if isinstance(length, int) and length > 0 else None


@dataclass(frozen=True)
class EvalReport:
    """What `zoo eval` measured: a model on a task's split, or its fidelity to the dense model."""

    model: str
    task: str
    dataset: str
    split: str
    n_examples: int
    metrics: dict[str, float]  # metric name -> value: accuracy, or cosine (and agreement, KL) for fidelity
    max_length: int | None = None  # tokens per example (not for fidelity: the sample text as it is)

    def to_json(self) -> dict[str, Any]:
        """As `zoo eval --json` prints it."""
        length = {} if self.max_length is None else {"max_length": self.max_length}
        return {
            "model": self.model,
            "task": self.task,
            "dataset": self.dataset,
            "split": self.split,
            "n_examples": self.n_examples,
            **length,
            "metrics": self.metrics,
        }


def run_eval(
    model_dir: Path,
    task: str,
    *,
    data: str | None = None,
    split: str = "test",
    reference: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
    mode: str = "materialize",
    max_length: int | None = None,
    task_name: str | None = None,
    label_names: list[str] | None = None,
) -> EvalReport:
    """Under a launcher (torchrun, accelerate launch) rank 0 measures and every rank gets its report."""
    from .. import distributed

    distributed.setup()
    return distributed.on_main(
        lambda: _run_eval(
            Path(model_dir),
            task,
            data=data,
            split=split,
            reference=reference,
            text_column=text_column,
            label_column=label_column,
            limit=limit,
            mode=mode,
            max_length=max_length,
            task_name=task_name,
            label_names=label_names,
        )
    )


def _run_eval(
    model_dir: Path,
    task: str,
    *,
    data: str | None,
    split: str,
    reference: str | None,
    text_column: str | None,
    label_column: str | None,
    limit: int | None,
    mode: str,
    max_length: int | None,
    task_name: str | None,
    label_names: list[str] | None,
) -> EvalReport:
    from ..resolve import resolve_model
    from . import evaluate, get_task
    from .fidelity import base_cosine, head_fidelity, sample_texts, text_batch

    if not (model_dir / "config.json").is_file():
        raise TaskError(f"{model_dir} is not a model directory (no config.json)")
    if task == "fidelity":
        ref_dir = resolve_model(reference or _default_reference(model_dir)).path
        texts = sample_texts()[:limit] if limit else sample_texts()
        (model, new), (ref, ref_new) = _load(model_dir, None, mode), _load(ref_dir, None, "materialize")
        batch = text_batch(model_dir, texts)
        metrics = {"cosine": base_cosine(model.eval(), ref.eval(), batch)}
        if not new and not ref_new:  # heads only where both hold a trained one
            metrics.update(head_fidelity(model, ref, batch))
        return EvalReport(str(model_dir), task, f"zoo sample text vs {ref_dir}", "samples", len(texts), metrics)
    spec = get_task(
        task, data, text_column=text_column, label_column=label_column, task_name=task_name, label_names=label_names
    )
    spec.examples("train")  # label vocabulary
    model, new = _load(model_dir, spec.auto_task, mode)
    if new:
        raise TaskError(
            f"{model_dir} holds no trained {spec.auto_task} head: its {len(new)} parameters "
            f"({', '.join(new[:3])}{', ...' if len(new) > 3 else ''}) would be random",
            hint="fine-tune first (zoo finetune, or zoo compress --task), or measure --task fidelity",
        )
    length = max_length or trained_length(model_dir) or DEFAULT_MAX_LENGTH  # as trained, unless told
    score, _ = evaluate(model, spec, model_dir, split, limit=limit, max_length=length)
    return EvalReport(str(model_dir), task, spec.dataset, split, score.n_examples, {score.metric: score.value}, length)
