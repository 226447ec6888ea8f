"""Commands that make and measure models: `zoo compress`, `zoo finetune`, `zoo eval` (and the writing that
`zoo compress` shares with `zoo pack`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import ZooError
from .common import (
    OverwriteOpt,
    RecipeOpt,
    ShardOpt,
    err,
    fails_cleanly,
    mb,
    out,
    parse_size,
    print_made,
    progress,
    stage_callback,
)


def _print_result(verb: str, result, model_name: str) -> None:
    from zoo.cards import loads_as, rounding
    from zoo.formats.reader import read_config

    m = result.manifest
    sizes = m.sizes
    codecs_used = sorted({e.codec.describe() for e in m.modules.values()})
    out.print(f"{verb} {model_name} with recipe {m.recipe.name} in {result.seconds:.1f} s -> {result.path}")
    out.print(
        f"  checkpoint      {mb(sizes.checkpoint_nbytes)}  ({sizes.checkpoint_ratio:.2f}x smaller than "
        f"{mb(sizes.source_nbytes)})"
    )
    out.print(
        f"  encoder linear  {mb(sizes.encoder_linear_nbytes)}  ({sizes.encoder_linear_ratio:.2f}x smaller than fp32 "
        f"{mb(sizes.encoder_linear_fp32_nbytes)})"
    )
    if m.modules or m.structure is None:
        out.print(f"  modules         {len(m.modules)} compressed: {', '.join(codecs_used)}")
    print_made(loads_as(m, read_config(result.path)), rounding(m), m.fidelity)
    if m.structure is not None:
        st = m.structure
        out.print(
            f"  pruned          heads per layer {st.attention_heads} (of {st.heads_before}), FFN widths "
            f"{st.intermediate_sizes} (of {st.intermediate_size_before})"
        )


def _load_recipe(recipe: str, target_ratio: float | None):
    from ..recipes import load_recipe, with_target_ratio

    spec = load_recipe(recipe)
    return spec if target_ratio is None else with_target_ratio(spec, target_ratio)


def run_compact(
    model: str,
    recipe: str,
    out_dir: Path | None,
    revision: str | None,
    overwrite: bool,
    max_shard_size: str,
    *,
    pack: bool,
    target_ratio: float | None = None,
    calibration: Path | None = None,
    allow_untrained: bool = False,
) -> None:
    """`zoo compress` without --task, and `zoo pack`: write the compact checkpoint with progress, then say what
    it holds."""
    from zoo.formats import SafetensorsDir

    from ..compress import write_compact
    from ..resolve import resolve_model

    spec = _load_recipe(recipe, target_ratio)
    target = out_dir or Path(f"{Path(model.rstrip('/')).name}-{spec.name}")
    shard_bytes = parse_size(max_shard_size)
    resolved = resolve_model(model, revision)
    source = SafetensorsDir(resolved.path)
    total = sum(source.nbytes(name) for name in source.names())
    with progress() as bar:
        searching = bar.add_task("searching", total=None, visible=False, unit="(module, setting) pairs")
        rounding = bar.add_task("rounding (GPTQ)", total=None, visible=False, unit="modules")
        task = bar.add_task("packing" if pack else "compressing", total=total, unit="bytes")
        searched = stage_callback(
            "search",
            "(module, setting) pairs measured",
            bar,
            searching,
            start="measuring {total} (module, setting) pairs",
        )
        rounded = stage_callback("GPTQ", "modules rounded", bar, rounding, start="rounding {total} modules")

        result = write_compact(
            resolved,
            spec,
            target,
            pack=pack,
            overwrite=overwrite,
            max_shard_bytes=shard_bytes,
            progress=lambda _name, nbytes: bar.advance(task, nbytes),
            search_progress=searched,
            calibration=calibration,
            rounding_progress=rounded,
            measure_fidelity=not pack,
            allow_untrained=allow_untrained,
        )
    _print_result("Packed" if pack else "Compressed", result, model)
    if not pack:
        _warn_if_unfaithful(result.manifest, model, recipe)


def _warn_if_unfaithful(m, model: str, recipe: str) -> None:
    """Say so when a post-training model strays from the dense one, and how to recover it."""
    from zoo.formats import FIDELITY_FLOOR

    if m.fidelity is None:
        out.print("  fidelity        not measured: the model reads no text (measure with `zoo eval DIR --task ...`)")
        return
    if not m.fidelity.faithful:
        err.print(
            f"[yellow]warning:[/yellow] cosine {m.fidelity.value:.4f} to the dense model is below {FIDELITY_FLOOR}: "
            f"post-training {escape(m.recipe.name)} loses much of what the model computes. Fine-tune while "
            f"compressing to recover it:\n  zoo compress {escape(model)} --recipe {escape(recipe)} "
            "--task TASK --data DIR",
            highlight=False,
        )


TaskOpt = Annotated[
    str,
    typer.Option(
        "--task",
        "-t",
        help="rotten_tomatoes, sst2, text-classification, fashion_mnist, "
        "image-classification (or fidelity for `zoo eval`).",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Directory with train/validation/test files (.tsv/.csv/.jsonl, idx, npz), "
        "or a Hugging Face dataset name \\[default: the task's hub dataset].",
    ),
]
TextColOpt = Annotated[
    str | None, typer.Option("--text-column", help="Column holding the text \\[default: sentence or text].")
]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="Column holding the label \\[default: label].")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, or auto (cuda when available).")]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", min=1, help="Use a seeded random subset of this many examples per split (quick checks)."),
]
TaskNameOpt = Annotated[
    str | None,
    typer.Option(
        "--task-name",
        help="The name results are recorded under (manifest, card) \\[default: the data's dataset card "
        "pretty_name, else its folder's name, else the hub dataset].",
    ),
]
LabelNamesOpt = Annotated[
    str | None,
    typer.Option(
        "--label-names",
        help="Comma-separated names of integer labels 0..N-1, e.g. World,Sports,Business "
        "\\[default: labels.txt beside the data, else the numbers; string labels are their own names].",
    ),
]


def _task(
    name: str,
    data: str | None,
    text_column: str | None,
    label_column: str | None,
    task_name: str | None = None,
    label_names: str | None = None,
):
    from ..tasks import get_task

    return get_task(
        name,
        data,
        text_column=text_column,
        label_column=label_column,
        task_name=task_name,
        label_names=_names(label_names),
    )


def _names(label_names: str | None) -> list[str] | None:
    """--label-names a,b,c as a list."""
    return [n.strip() for n in label_names.split(",")] if label_names is not None else None


@fails_cleanly
def compress(
    model: Annotated[
        str,
        typer.Argument(
            help="Local directory, Hugging Face id, or alias (minilm, bert-base, ...). "
            "all-MiniLM-L6-v2 falls back to its packaged copy when the hub is unreachable."
        ),
    ],
    recipe: RecipeOpt,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory \\[default: ./MODEL-RECIPE].")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            "-t",
            help="Fine-tune the compressed model on this task with distillation "
            "(rotten_tomatoes, sst2, text-classification, ...). Without it: post-training only.",
        ),
    ] = None,
    data: DataOpt = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Fine-tuned dense model to distil from \\[default: MODEL if it "
            "has the task's head, else MODEL fine-tuned first].",
        ),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Student training epochs \\[default: the recipe's]. 0: no training, the compressed teacher is "
            "evaluated as it is (a search recipe still measures its layers on the task).",
        ),
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", "--lr", help="Student learning rate \\[default: the recipe's].")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Student examples per step \\[default: the recipe's].")
    ] = None,
    teacher_epochs: Annotated[float, typer.Option(help="Epochs when the teacher is fine-tuned here.")] = 2.0,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    task_name: TaskNameOpt = None,
    label_names: LabelNamesOpt = None,
    device: DeviceOpt = "cpu",
    limit: LimitOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last epoch checkpoint in OUT.work/.")
    ] = False,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            min=8,
            help="With --task: tokens per text example, in training and scoring \\[default: the "
            "length the teacher was trained with, else the recipe's, else 64].",
        ),
    ] = None,
    target_ratio: Annotated[
        float | None,
        typer.Option(
            "--target-ratio",
            help="Search recipes: how many times smaller than the dense model the whole "
            "checkpoint must be \\[default: the recipe's].",
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Post-training only: text to measure on, for recipes that "
            "round with GPTQ and for a search's sensitivity: a .txt file (one text per line) or "
            "a data directory (its train split's texts) \\[default: built-in sample sentences].",
        ),
    ] = None,
    allow_untrained: Annotated[
        bool,
        typer.Option(
            "--allow-untrained",
            help="Post-training only: write a recipe that needs --task (kron-8x, kron-19x) "
            "without fine-tuning; its fidelity is reported.",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    max_shard_size: ShardOpt = "2GB",
) -> None:
    """Compress a dense model into the compact zoo format: post-training, or with [bold]--task[/bold]
    by compression-aware fine-tuning with distillation from the dense teacher.

    Examples:
      [bold]zoo compress minilm --recipe 4bit-2of4[/bold]
      [bold]zoo compress minilm --recipe 4bit-2of4 --task rotten_tomatoes --data tests/data/rotten_tomatoes[/bold]
      [bold]zoo compress minilm --recipe search --target-ratio 12[/bold]   (per-layer settings under a ratio budget)
    """
    if task is None:
        training_only = {
            "--data": data,
            "--teacher": teacher,
            "--epochs": epochs,
            "--learning-rate": learning_rate,
            "--batch-size": batch_size,
            "--limit": limit,
            "--resume": resume or None,
            "--max-length": max_length,
            "--task-name": task_name,
            "--label-names": label_names,
        }
        given = [name for name, value in training_only.items() if value is not None]
        if given:
            raise ZooError(
                f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with --task",
                hint="add --task to fine-tune while compressing",
            )
        from .. import distributed

        distributed.setup()
        # no training to share: under a launcher rank 0 compresses, the others wait for it
        distributed.on_main(
            lambda: run_compact(
                model,
                recipe,
                out_dir,
                revision,
                overwrite,
                max_shard_size,
                pack=False,
                target_ratio=target_ratio,
                calibration=calibration,
                allow_untrained=allow_untrained,
            )
        )
        return
    if calibration is not None:
        raise ZooError(
            "--calibration applies to post-training compression; with --task the student is fine-tuned "
            "on the task's data",
            hint="leave out --calibration (or --task)",
        )
    if allow_untrained:
        raise ZooError(
            "--allow-untrained applies to post-training compression; with --task the model is trained",
            hint="leave out --allow-untrained (or --task)",
        )
    from ..resolve import resolve_model
    from ..train.pipeline import compress_with_training
    from ..train.progress import RichProgress

    spec = _load_recipe(recipe, target_ratio)
    target = out_dir or Path(f"{Path(model.rstrip('/')).name}-{spec.name}-{task}")
    task_spec = _task(task, data, text_column, label_column, task_name, label_names)
    resolved = resolve_model(model, revision)
    result = compress_with_training(
        resolved,
        spec,
        task_spec,
        target,
        teacher=teacher,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        teacher_epochs=teacher_epochs,
        device=device,
        limit=limit,
        resume=resume,
        overwrite=overwrite,
        max_length=max_length,
        callbacks=lambda stage: [
            RichProgress(f"{'fine-tuning teacher' if stage == 'teacher' else 'training ' + spec.name}", err)
        ],
        search_progress=stage_callback(
            "search", "(module, setting) pairs measured", start="measuring {total} (module, setting) pairs on the task"
        ),
    )
    _print_result("Compressed", result, model)
    training = result.manifest.training
    assert training is not None  # compress_with_training records how the student was trained
    s = result.scores
    teacher_acc, student_acc = s.teacher_test.value, s.compressed_test.value
    out.print(f"  teacher         {result.teacher}")
    if training.world_size and training.world_size > 1:
        out.print(
            f"  processes       {training.world_size} ({training.backend}), {training.global_batch_size} examples "
            "per step over all of them"
        )
    if result.resumed_from_step is not None:
        out.print(f"  resumed         from the checkpoint at step {result.resumed_from_step}")
    out.print(
        f"  test accuracy   teacher {teacher_acc:.4f}, compressed {student_acc:.4f} "
        f"(retention {student_acc / teacher_acc:.2%}, agreement {s.agreement.value:.2%}, "
        f"{s.compressed_test.n_examples} examples, {training.max_length} tokens each)"
    )
    out.print(
        f"  val accuracy    teacher {s.teacher_validation.value:.4f}, compressed {s.compressed_validation.value:.4f}"
    )


@fails_cleanly
def finetune(
    model: Annotated[str, typer.Argument(help="Local directory, Hugging Face id, or alias (minilm, bert-base, ...).")],
    task: TaskOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the fine-tuned dense model.")],
    data: DataOpt = None,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 2.0,
    learning_rate: Annotated[float, typer.Option("--learning-rate", "--lr", help="Peak learning rate.")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Examples per step.")] = 32,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            min=8,
            help="Tokens per text example, in training and scoring; recorded with the model, so "
            "`zoo compress --task` and `zoo eval` use it too \\[default: 64].",
        ),
    ] = None,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    task_name: TaskNameOpt = None,
    label_names: LabelNamesOpt = None,
    device: DeviceOpt = "cpu",
    limit: LimitOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last epoch checkpoint of OUT.work/.")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune a dense model on a task: the baseline (teacher) that compression is measured against.

    Example: [bold]zoo finetune minilm --task rotten_tomatoes --data tests/data/rotten_tomatoes --out minilm-rt[/bold]
    """
    from ..resolve import resolve_model
    from ..train.finetune import finetune as run_finetune
    from ..train.progress import RichProgress

    spec = _task(task, data, text_column, label_column, task_name, label_names)
    resolved = resolve_model(model)
    result = run_finetune(
        resolved,
        spec,
        out_dir,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        limit=limit,
        resume=resume,
        overwrite=overwrite,
        callbacks=[RichProgress(f"fine-tuning {model}", err)],
    )
    out.print(
        f"Fine-tuned {model} on {escape(spec.dataset)} at {result.max_length} tokens per example in "
        f"{result.seconds / 60:.1f} min -> {result.path}"
    )
    for score in (result.validation, result.test):
        out.print(f"  {score.split:10s} {score.metric} {score.value:.4f} ({score.n_examples} examples)")


@fails_cleanly
def eval_(
    model_dir: Annotated[Path, typer.Argument(help="A model directory: zoo checkpoint or plain dense.")],
    task: TaskOpt,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    reference: Annotated[
        str | None,
        typer.Option(
            help="fidelity only: the dense model to compare with \\[default: the manifest's teacher or base model]."
        ),
    ] = None,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    task_name: TaskNameOpt = None,
    label_names: LabelNamesOpt = None,
    limit: LimitOpt = None,
    mode: Annotated[
        str, typer.Option(help="Execution mode for zoo checkpoints: materialize, packed or kernel.")
    ] = "materialize",
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", min=8, help="Tokens per text example \\[default: as trained, else 64]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Measure a model on a task's split (accuracy, at the token length it was trained with), or its
    [bold]fidelity[/bold] to the dense model on built-in sample text: cosine of the base models' embeddings,
    and agreement and KL when both hold a trained head.

    Examples:
      [bold]zoo eval minilm-4bit-rt --task rotten_tomatoes --data tests/data/rotten_tomatoes[/bold]
      [bold]zoo eval minilm-4bit-2of4 --task fidelity[/bold]
    """
    from ..tasks.evaluation import run_eval

    result = run_eval(
        model_dir,
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
        label_names=_names(label_names),
    )
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    for key, value in result.metrics.items():
        out.print(f"{key:12s} {value:.4f}")
    length = f", {result.max_length} tokens each" if result.max_length else ""
    out.print(
        f"[dim]{escape(result.model)} on {escape(result.dataset)} {result.split}, "
        f"{result.n_examples} examples{length}[/dim]"
    )
