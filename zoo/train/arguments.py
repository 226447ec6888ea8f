"""TrainingArguments zoo uses for every run: checkpoint and evaluate each epoch, log quietly. Under a launcher
(torchrun, accelerate launch) the batch size is the global one, split evenly over the processes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .. import distributed
from ..tasks import TaskError


def per_device_batch(batch_size: int) -> int:
    """Examples each process takes per step, for `batch_size` examples per step over all of them: the same
    recipe trains the same steps on the same global batches whether one process runs it or several."""
    world = distributed.world_size()
    if batch_size % world:
        raise TaskError(
            f"a batch of {batch_size} examples does not split evenly over {world} processes",
            hint=f"give --batch-size a multiple of {world} (the global batch, over all processes)",
        )
    return batch_size // world


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
    per_device = per_device_batch(batch_size)
    backend = distributed.setup(device)  # the launcher's process group, joined before Trainer looks for one
    return TrainingArguments(
        output_dir=str(work),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=per_device,
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
        ddp_backend=backend,  # None for one process
        ddp_timeout=int(distributed.timeout_s()),
    )


def accuracy_metric(prediction) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def last_checkpoint(work: Path) -> str | None:
    """The newest complete Trainer checkpoint under `work`, or None. Trainer writes trainer_state.json after the
    weights, optimizer and rank 0's RNG state: a checkpoint without it was cut short (a killed process), and
    resuming from it would fail, so the one before it is taken."""
    if not work.is_dir():
        return None
    done = [
        p for p in work.iterdir() if re.fullmatch(r"checkpoint-\d+", p.name) and (p / "trainer_state.json").is_file()
    ]
    return str(max(done, key=lambda p: int(p.name.split("-")[1]))) if done else None
