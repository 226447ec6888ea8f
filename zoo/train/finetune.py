"""`zoo finetune`: the dense fine-tuned baseline (the teacher) for a task, with transformers' Trainer.

Checkpoints go to a work directory beside the output each epoch, so `--resume` continues an
interrupted run; the output directory appears only when training and evaluation are done. Under a launcher
(torchrun, accelerate launch) every process trains its shard of each batch; rank 0 alone saves, evaluates and
writes the output (zoo.distributed)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.formats.writer import ensure_writable, replace_dir, write_output_mark
from zoo.loaders import quiet_transformers

from .. import distributed
from ..resolve import ResolvedModel
from ..tasks import Score, Task, TaskError, evaluate
from ..tasks.text import DEFAULT_MAX_LENGTH
from .arguments import accuracy_metric, last_checkpoint, training_arguments


@dataclass(frozen=True)
class FinetuneResult:
    path: Path
    test: Score
    validation: Score
    seconds: float
    max_length: int


def work_dir_for(out: Path) -> Path:
    return out.parent / f"{out.name}.work"


def load_for_task(model_dir: Path, task: Task, *, new_head: bool = False):
    """The model with the head the task needs; `new_head` builds one with the task's labels."""
    from zoo.loaders import load

    task.examples("train")  # the label vocabulary comes from the train split
    labels = task.label_names
    kwargs: dict[str, Any] = {}
    if new_head:
        # a head trained for other labels (an ImageNet classifier, say) is replaced, not reused
        kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "ignore_mismatched_sizes": True,
        }
    with quiet_transformers():
        return load(model_dir, task=task.auto_task, new_head=new_head, **kwargs)


def is_finetuned(model_dir: Path, task: Task) -> bool:
    """Does the checkpoint already carry a trained head for this task (same number of labels)?"""
    from zoo.formats import read_config
    from zoo.loaders.auto import TASKS

    config = read_config(model_dir)
    head = TASKS[task.auto_task].removeprefix("AutoModel")  # the task's classes end so: ForSequenceClassification
    archs = config.get("architectures") or []
    n = len(config.get("id2label") or {}) or config.get("num_labels")
    return bool(head) and any(a.endswith(head) for a in archs) and n == task.num_labels


def finetune(
    model: ResolvedModel,
    task: Task,
    out: str | Path,
    *,
    epochs: float = 2.0,
    learning_rate: float = 5e-5,
    batch_size: int = 32,
    max_length: int | None = None,
    device: str = "cpu",
    limit: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks=(),
) -> FinetuneResult:
    """Fine-tune `model` with a new head for `task` into `out`, trained and scored at `max_length` tokens per
    example (default DEFAULT_MAX_LENGTH), which the output records (trained_length) for what comes next."""
    import time

    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    out = Path(out)
    ensure_writable(out, overwrite)
    max_length = max_length or DEFAULT_MAX_LENGTH
    start = time.perf_counter()
    work = work_dir_for(out)
    distributed.setup(device)
    checkpoint = last_checkpoint(work / "checkpoints") if resume else None
    if resume and checkpoint is None:
        raise TaskError(f"nothing to resume: no checkpoint under {work / 'checkpoints'}")
    if not resume:
        distributed.on_main(lambda: shutil.rmtree(work / "checkpoints", ignore_errors=True))
    net = load_for_task(model.path, task, new_head=True)
    args = training_arguments(
        work / "checkpoints", epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, device=device
    )
    trainer = Trainer(
        model=net,
        args=args,
        train_dataset=task.features("train", model.path, limit=limit, max_length=max_length),
        eval_dataset=task.features("validation", model.path, limit=limit, max_length=max_length),
        data_collator=task.collator(model.path),
        compute_metrics=accuracy_metric,
        callbacks=list(callbacks),
    )
    if callbacks:  # our progress bar replaces the printed log dicts
        trainer.remove_callback(PrinterCallback)
    with quiet_transformers():
        trainer.train(resume_from_checkpoint=checkpoint)

    def stage() -> tuple[Path, Score, Score]:  # rank 0 (every rank holds the same weights now: DDP)
        staged = work / f"final-{uuid.uuid4().hex[:8]}"
        with quiet_transformers():
            trainer.save_model(str(staged))
        (staged / "training_args.bin").unlink(missing_ok=True)  # a pickle: nothing a loader should open
        copy_processor(model.path, staged)
        validation, _ = evaluate(trainer.model, task, staged, "validation", limit=limit, max_length=max_length)
        test, _ = evaluate(trainer.model, task, staged, "test", limit=limit, max_length=max_length)
        write_output_mark(
            staged,
            "zoo finetune",
            training={
                "task": task.name,
                "dataset": task.dataset,
                "max_length": max_length,
                "epochs": epochs,
                "labels": list(task.label_names),
                "validation_accuracy": round(validation.value, 6),
                "test_accuracy": round(test.value, 6),
                "world_size": distributed.world_size(),
                "global_batch_size": batch_size,
            },
        )
        return staged, validation, test

    def publish() -> None:  # rank 0, once every rank is known to have come this far
        replace_dir(staged, out)
        shutil.rmtree(work, ignore_errors=True)

    staged, validation, test = distributed.on_main(stage)
    distributed.on_main(publish)
    return FinetuneResult(out, test, validation, time.perf_counter() - start, max_length)


def copy_processor(src: Path, dst: Path) -> None:
    """Tokenizer / image-processor files travel with the weights, so the output runs on its own."""
    from zoo.formats import companion_files

    for name in companion_files(src):
        if name != "config.json" and not (dst / name).exists():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
