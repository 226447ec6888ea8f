"""`zoo eval`: a model directory on a task split, or its fidelity to the dense model."""

from __future__ import annotations

import json
from pathlib import Path

from .base import TaskError


def _load(model_dir: Path, auto_task: str | None, mode: str):
    from loaders import load, quiet_transformers

    with quiet_transformers():
        return load(model_dir, task=auto_task, mode=mode)


def _default_reference(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text())
    q = config.get("quantization_config")
    if not (isinstance(q, dict) and q.get("quant_method") == "zoo"):
        raise TaskError(f"{model_dir} is not a zoo checkpoint, so it has no dense reference",
                        hint="pass --reference DIR (the dense model to compare with)")
    training = q.get("training") or {}
    return training.get("teacher") or q["base_model"]["id"]


def _trained_length(model_dir: Path) -> int | None:
    """Evaluate with the sequence length the model was trained and measured with, when recorded."""
    q = json.loads((model_dir / "config.json").read_text()).get("quantization_config")
    return ((q or {}).get("training") or {}).get("max_length") if isinstance(q, dict) else None


def run_eval(model_dir: Path, task: str, *, data: str | None = None, split: str = "test", reference: str | None = None,
             text_column: str | None = None, label_column: str | None = None, limit: int | None = None,
             mode: str = "materialize", max_length: int | None = None) -> dict:
    from ..resolve import resolve_model
    from . import evaluate, get_task
    from .fidelity import fidelity, sample_texts, text_batch

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TaskError(f"{model_dir} is not a model directory (no config.json)")
    if task == "fidelity":
        ref_dir = resolve_model(reference or _default_reference(model_dir)).path
        texts = sample_texts()[:limit] if limit else sample_texts()
        batch = text_batch(model_dir, texts)
        metrics = fidelity(_load(model_dir, None, mode), _load(ref_dir, None, "materialize"), batch)
        return {"model": str(model_dir), "task": task, "dataset": f"zoo sample text vs {ref_dir}", "split": "samples",
                "n_examples": len(texts), "metrics": metrics}
    spec = get_task(task, data, text_column=text_column, label_column=label_column)
    spec.examples("train")  # label vocabulary
    model = _load(model_dir, spec.auto_task, mode)
    score, _ = evaluate(model, spec, model_dir, split, limit=limit, max_length=max_length or _trained_length(model_dir))
    return {"model": str(model_dir), "task": task, "dataset": spec.dataset, "split": split,
            "n_examples": score.n_examples, "metrics": {score.metric: score.value}}
