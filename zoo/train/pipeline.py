"""`zoo compress MODEL --recipe R --task T`: compression-aware fine-tuning with distillation.

1. The teacher: `--teacher DIR`, MODEL itself when it already has this task's head, or MODEL
   fine-tuned here first (kept in OUT.work/teacher, so a rerun or `--resume` reuses it).
2. The student: a copy of the teacher (minus layers, for XTC's `keep_layers`) whose target weights
   are parametrized by the recipe's training-time methods (and gated, for block pruning), trained
   with distillation on Trainer, a checkpoint per epoch in OUT.work/student; pruned heads and FFN
   neurons are then removed physically.
3. Export: the compressed weights are packed (and verified to fit the codec) into the compact
   format, the stored checkpoint is loaded back through the loaders and evaluated, and only then
   does OUT appear, by rename, with the measured teacher and student results in its manifest.

Under a launcher (torchrun, accelerate launch; zoo.distributed) every process trains the student on its shard
of each global batch through DDP, and fine-tunes the teacher the same way when there is none. Rank 0 alone
writes (the teacher, checkpoints, the packed output, the card), searches and evaluates; the others wait for it
and get its results, so the manifest records one set of numbers. What is computed from weights agrees across
ranks: N:M masks come from latent weights DDP keeps identical (and DDP hands every forward rank 0's buffers),
k-means assignments from the same teacher by a deterministic k-means, learned clip values are parameters whose
gradients DDP averages, movement-pruning scores are averaged over the ranks (Pruner.accumulate), and a
search's codecs are chosen once, on rank 0, and broadcast."""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers.trainer_callback import PrinterCallback

from zoo.cards import base_card_data, write_card
from zoo.formats import EvalResult, Manifest, TrainingRecord
from zoo.formats.writer import ensure_writable, replace_dir
from zoo.loaders import quiet_transformers

from .. import distributed
from ..compress import write_compact
from ..errors import RecipeError
from ..methods import attach, check_plan, export, keep_layers, layer_list, plan_modules, stored_tensors
from ..methods.prune import Pruner, PruningSchedule, check_pruning
from ..recipes import Recipe
from ..resolve import ResolvedModel, resolve_model
from ..tasks import Score, Task, TaskError, evaluate
from ..tasks.evaluation import trained_length
from ..tasks.text import DEFAULT_MAX_LENGTH
from .arguments import accuracy_metric, last_checkpoint, training_arguments
from .distill import CompressionSchedule, DistillTrainer, hidden_map
from .finetune import copy_processor, finetune, is_finetuned, load_for_task, work_dir_for


@dataclass(frozen=True)
class TrainedScores:
    """The teacher and the stored compressed model, measured on the task's validation and test splits."""

    teacher_validation: Score
    compressed_validation: Score
    teacher_test: Score
    compressed_test: Score
    agreement: Score  # how often the compressed model predicts the teacher's class, on test

    def by_role(self) -> list[tuple[Literal["teacher", "compressed"], Score]]:
        """(role, score) in the order the manifest records them."""
        return [
            ("teacher", self.teacher_validation),
            ("compressed", self.compressed_validation),
            ("teacher", self.teacher_test),
            ("compressed", self.compressed_test),
            ("compressed", self.agreement),
        ]


@dataclass(frozen=True)
class TrainedResult:
    path: Path
    manifest: Manifest
    seconds: float
    teacher: Path
    scores: TrainedScores
    losses: list[float]  # training loss as logged, about 20 points over the run
    resumed_from_step: int | None


def _teacher(
    model: ResolvedModel,
    task: Task,
    work: Path,
    teacher: str | None,
    *,
    epochs: float,
    max_length: int,
    device: str,
    limit: int | None,
    callbacks,
) -> Path:
    if teacher is not None:
        path = resolve_model(teacher).path
        if not is_finetuned(path, task):
            raise TaskError(
                f"teacher {teacher} has no {task.num_labels}-label head for task {task.name}",
                hint="fine-tune it first with `zoo finetune`, or leave out --teacher",
            )
        return path
    if is_finetuned(model.path, task):
        return model.path
    path = work / "teacher"
    if not (path / "config.json").is_file():
        finetune(
            model,
            task,
            path,
            epochs=epochs,
            max_length=max_length,
            device=device,
            limit=limit,
            resume=last_checkpoint(work / "teacher.work" / "checkpoints") is not None,
            callbacks=callbacks("teacher"),
        )
    return path


def compress_with_training(
    model: ResolvedModel,
    recipe: Recipe,
    task: Task,
    out: str | Path,
    *,
    teacher: str | None = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    teacher_epochs: float = 2.0,
    device: str = "cpu",
    limit: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks=lambda stage: [],
    search_progress=None,
    max_length: int | None = None,
) -> TrainedResult:
    """Fine-tune `recipe`'s compressed student of `model` on `task` and write it to `out`.
    `callbacks(stage)` gives extra Trainer callbacks for the "teacher" and "student" runs. Tokens per example:
    `max_length`, else the length the teacher was trained with (zoo records it), else the recipe's, else
    DEFAULT_MAX_LENGTH; the student trains, and both are scored, at that one length."""
    start = time.perf_counter()
    out = Path(out)
    ensure_writable(out, overwrite)
    # fine-tuning trains the codec's values directly: post-training rounding (GPTQ) plays no part, nor is recorded
    recipe = recipe.model_copy(update={"gptq": None})
    overrides = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size}
    t = recipe.training.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    from ..architecture import meta_model

    if recipe.search is not None:  # an unreachable target fails here, before any fine-tuning
        if t.keep_layers:
            raise RecipeError(
                f"recipe {recipe.name}: a search and keep_layers cannot be combined yet",
                hint="search on the full model, or fix the codecs of a layer-reduced recipe",
            )
        from ..search import check_reachable, search_budget, searched_modules

        meta = meta_model(model.path)
        targets = searched_modules(meta, recipe)
        check_reachable(targets, recipe.search, search_budget(meta, model.path, targets, recipe))
    else:  # so do codecs that do not fit their layers (Kronecker factors that do not divide them...)
        meta = meta_model(model.path)
        if t.keep_layers:
            keep_layers(meta, t.keep_layers)
        planned = check_plan(meta, recipe) if recipe.rules else {}
        if recipe.pruning is not None:  # ... and pruning blocks that do not tile the layers
            if t.epochs == 0:
                raise RecipeError(
                    f"recipe {recipe.name} prunes by movement scores, which only training measures",
                    hint="give it at least one epoch (leave out --epochs 0)",
                )
            check_pruning(meta, recipe.pruning, planned)
    work = work_dir_for(out)
    backend = distributed.setup(device)
    if not resume:
        distributed.on_main(lambda: shutil.rmtree(work / "student", ignore_errors=True))
    teacher_dir = _teacher(
        model,
        task,
        work,
        teacher,
        epochs=teacher_epochs,
        max_length=max_length or t.max_length or DEFAULT_MAX_LENGTH,
        device=device,
        limit=limit,
        callbacks=callbacks,
    )
    task.name_labels_from(teacher_dir)  # the teacher's label names, where the data gives only numbers
    length = max_length or trained_length(teacher_dir) or t.max_length or DEFAULT_MAX_LENGTH
    t = t.model_copy(update={"max_length": length})
    recipe = recipe.model_copy(update={"training": recipe.training.model_copy(update={"max_length": length})})
    teacher_net = load_for_task(teacher_dir, task)
    if t.distill.attention > 0:  # fused attention kernels (sdpa) return no attention probabilities
        teacher_net.set_attn_implementation("eager")
    if recipe.search is not None:  # per-module codecs from the task loss of the dense teacher
        from ..search import task_search

        searched = recipe  # once, on rank 0; every rank trains the codecs it chose
        recipe = distributed.on_main(
            lambda: task_search(teacher_net, teacher_dir, searched, task, search_progress, limit=limit)
        )
    student = copy.deepcopy(teacher_net)
    if hasattr(student.config, "id2label") and len(task.label_names) == len(student.config.id2label):
        student.config.id2label = dict(enumerate(task.label_names))  # names given now (--label-names) win
        student.config.label2id = {name: i for i, name in enumerate(task.label_names)}
    kept = keep_layers(student, t.keep_layers) if t.keep_layers else None
    plan = plan_modules(student, recipe) if recipe.rules else {}
    attach(student, plan, t)
    pruner = Pruner(student, recipe.pruning) if recipe.pruning is not None else None

    trainer = _trainer(
        student, teacher_net, teacher_dir, task, t, kept, work / "student", device, limit, callbacks("student"), pruner
    )
    checkpoint = last_checkpoint(work / "student") if resume else None
    if t.epochs > 0:  # --epochs 0: the compressed teacher as it is, measured the same way
        with quiet_transformers():
            trainer.train(resume_from_checkpoint=checkpoint)
    distributed.write_digest(student, pruner.named_scores() if pruner is not None else None)  # tests only

    def stage() -> tuple[Path, Manifest, TrainedScores]:  # rank 0: the others hold the same student (DDP)
        stored = stored_tensors(student)
        export(student)
        structure = pruner.remove(student) if pruner is not None else None
        staged, packed = _pack(student, model, recipe, teacher_dir, work, stored, structure)
        if set(packed.manifest.modules) != set(plan):
            raise RecipeError(
                f"the packed modules differ from the trained ones: {sorted(set(plan) ^ set(packed.manifest.modules))}"
            )
        scores = _measure(teacher_net, teacher_dir, staged, task, limit, length)  # t.max_length, as an int
        manifest = packed.manifest.model_copy(
            update={
                "evaluation": [
                    EvalResult(
                        role=role,
                        task=task.name,
                        dataset=task.dataset,
                        split=s.split,
                        metric=s.metric,
                        value=round(s.value, 6),
                        n_examples=s.n_examples,
                    )
                    for role, s in scores.by_role()
                ],
                "training": TrainingRecord(
                    task=task.name,
                    dataset=task.dataset,
                    base_model=model.id,
                    teacher=str(teacher_dir),
                    epochs=t.epochs,
                    steps=trainer.state.global_step,
                    device=device,
                    keep_layers=kept,
                    max_length=t.max_length,
                    labels=list(task.label_names),
                    seconds=round(time.perf_counter() - start, 1),
                    world_size=distributed.world_size(),
                    backend=backend,
                    global_batch_size=t.batch_size,
                ),
            }
        )
        config_path = staged / "config.json"
        config = json.loads(config_path.read_text())
        config["quantization_config"] = manifest.to_quantization_config()
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        write_card(staged, name=out.name)
        return staged, manifest, scores

    def publish() -> None:  # rank 0, once every rank is known to have come this far
        replace_dir(staged, out)
        for leftover in ("student", "student-dense"):
            shutil.rmtree(work / leftover, ignore_errors=True)
        if not (work / "teacher").exists():
            shutil.rmtree(work, ignore_errors=True)

    staged, manifest, scores = distributed.on_main(stage)
    distributed.on_main(publish)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    resumed_from = int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None
    return TrainedResult(out, manifest, time.perf_counter() - start, teacher_dir, scores, losses, resumed_from)


def _trainer(
    student,
    teacher_net,
    teacher_dir: Path,
    task: Task,
    t,
    kept,
    work: Path,
    device: str,
    limit: int | None,
    extra_callbacks: list,
    pruner: Pruner | None = None,
) -> DistillTrainer:
    train_features = task.features("train", teacher_dir, limit=limit, max_length=t.max_length)
    steps = math.ceil(len(train_features) / t.batch_size * t.epochs)
    args = training_arguments(
        work,
        epochs=t.epochs,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        device=device,
        warmup_ratio=t.warmup_ratio,
        lr_scheduler=t.lr_scheduler,
        weight_decay=t.weight_decay,
        seed=t.seed,
        logging_steps=max(1, steps // 20),
    )
    trainer = DistillTrainer(
        model=student,
        args=args,
        teacher=teacher_net,
        distill=t.distill,
        layer_map=hidden_map(len(layer_list(student)[1]), kept),
        train_dataset=train_features,
        eval_dataset=task.features("validation", teacher_dir, limit=limit, max_length=t.max_length),
        data_collator=task.collator(teacher_dir),
        compute_metrics=accuracy_metric,
        callbacks=[
            CompressionSchedule(student, dropout=t.dropout, mask_interval=t.mask_interval, prune_ramp=t.prune_ramp),
            *([PruningSchedule(pruner)] if pruner is not None else []),
            *extra_callbacks,
        ],
    )
    if extra_callbacks:  # a progress bar replaces the printed log dicts
        trainer.remove_callback(PrinterCallback)
    return trainer


def _pack(student, model: ResolvedModel, recipe: Recipe, teacher_dir: Path, work: Path, stored=None, structure=None):
    """The exported student through `pack`, which refuses any weight that does not fit the codec."""
    dense = work / "student-dense"
    shutil.rmtree(dense, ignore_errors=True)
    with quiet_transformers():
        student.save_pretrained(dense)
    copy_processor(teacher_dir, dense)
    staged = work / "export"
    source = ResolvedModel(path=dense, id=model.id, revision=model.revision, source=model.source)
    return staged, write_compact(
        source,
        recipe,
        staged,
        pack=True,
        overwrite=True,
        reference=teacher_dir,
        stored=stored,
        structure=structure,
        base_card=base_card_data(model.path) or {},
    )


def _measure(
    teacher_net, teacher_dir: Path, compressed_dir: Path, task: Task, limit: int | None, max_length: int
) -> TrainedScores:
    """Teacher and the *stored* compressed model (loaded back from disk) on validation and test."""
    compressed = load_for_task(compressed_dir, task)

    def measure(split: str):
        t_score, t_logits = evaluate(teacher_net, task, teacher_dir, split, limit=limit, max_length=max_length)
        c_score, c_logits = evaluate(compressed, task, compressed_dir, split, limit=limit, max_length=max_length)
        return t_score, c_score, t_logits, c_logits

    t_val, c_val, _, _ = measure("validation")
    t_test, c_test, t_logits, c_logits = measure("test")
    agree = float((t_logits.argmax(-1) == c_logits.argmax(-1)).float().mean())
    return TrainedScores(t_val, c_val, t_test, c_test, Score("teacher_agreement", agree, c_test.n_examples, "test"))
