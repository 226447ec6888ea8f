"""TrainingArguments zoo uses for every run: checkpoint and evaluate each epoch, log quietly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tasks import TaskError


def training_arguments(
    work: Path,
    *,
    epochs: float,
    learning_rate: float,
    batch_size: int,
    device: str,
    warmup_ratio: float = 0.1,
    lr_scheduler: str = "linear",
    weight_decay: float = 0.0,
    evaluate: bool = True,
    seed: int = 42,
    logging_steps: int = 10,
):
    from transformers import TrainingArguments

    if device not in ("cpu", "cuda", "auto"):
        raise TaskError(f"unknown device {device!r}", hint="choose cpu, cuda or auto")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TaskError("--device cuda was asked for, but torch sees no CUDA device", hint="use --device cpu")
    return TrainingArguments(
        output_dir=str(work),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=float(warmup_ratio),  # a float below 1 is a share of the steps
        lr_scheduler_type=lr_scheduler,
        weight_decay=weight_decay,
        eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=logging_steps,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


def accuracy_metric(prediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def last_checkpoint(work: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(work)) if work.is_dir() else None
