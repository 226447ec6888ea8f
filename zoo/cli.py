"""The `zoo` command line. Thin: parse, call the library, print.

Every deliberate failure is a ZooError: printed as one line (with its hint), exit status 1.
Ctrl-C exits with 130, SIGTERM with 143 (zoo.console); outputs are written atomically, so nothing
half-written remains."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from . import __version__
from .console import Terminated, Ticker, signal_exit_code
from .errors import ZooError

# typer 0.29's rich help gives flags a type column ("--overwrite <bool>") although they take no value
_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _option_type(self, ctx)

app = typer.Typer(
    name="zoo",
    help="Compress transformers 10-50x, store them in a compact verified format, and load them back.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fails_cleanly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooError as exc:
            hint = f" [dim](hint: {escape(exc.hint)})[/dim]" if exc.hint else ""
            err.print(f"[bold red]error:[/bold red] {escape(str(exc))}{hint}", highlight=False)
            raise typer.Exit(1) from None
        except (KeyboardInterrupt, Terminated, Exception) as exc:
            # a signal: its own exception, or whatever an extension it interrupted made of it (zoo.console)
            code = 143 if isinstance(exc, Terminated) else 130 if isinstance(exc, KeyboardInterrupt) else signal_exit_code()
            if code is None:
                raise
            what = "terminated" if code == 143 else "interrupted"
            err.print(f"{what}; no output was written (fine-tuning runs continue with --resume)")
            raise typer.Exit(code) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"zoo {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show transformers' own loading bars and "
                                          "reports, which zoo hides where it expects them (a new head, a base model).")
                       ] = False,
) -> None:
    """zoo: a model zoo and checkpoint registry for deeply compressed transformers."""
    if verbose:
        from zoo.loaders.auto import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B)?\s*$", re.IGNORECASE)


def _parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a size like 500MB or 2GB")
    unit = (match.group(2) or "B").upper()
    size = int(float(match.group(1)) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[unit])
    if size <= 0:
        raise typer.BadParameter("the shard size must be positive, like 500MB or 2GB")
    return size


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _shown(value) -> str:
    """Text a checkpoint or registry brings, made safe to print: no control characters (terminal escape
    sequences), no rich markup."""
    return escape(_CONTROL.sub("?", str(value)))


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


class _Amount(ProgressColumn):
    """Bytes for the writing bar; `done/total unit` for the others (the search counts (module, setting) pairs,
    GPTQ counts modules)."""

    def render(self, task) -> Text:
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return DownloadColumn().render(task)
        total = "?" if task.total is None else f"{int(task.total):,}"
        return Text(f"{int(task.completed):,}/{total} {unit}", style="progress.download")


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _Amount(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,  # the summary replaces the bar; an error stays the only line
        disable=not err.is_terminal,  # no bar to draw (and no blank line left behind); _stage prints lines instead
    )


def _stage(label: str, unit: str, bar: Progress | None = None, task_id=None, *, start: str, lines: bool | None = None):
    """A progress callback (done, total) for one long stage: it moves `bar`'s task, and where stderr is not a
    terminal (or without a bar) prints a line at the start, every ZOO_LOG_EVERY seconds (30) with an ETA, and at
    the end."""
    lines = (bar is None or not err.is_terminal) if lines is None else lines
    ticker: list[Ticker] = []

    def update(done: int, total: int) -> None:
        if bar is not None:
            bar.update(task_id, completed=done, total=total, visible=done < total)
        if not lines:
            return
        if not ticker:
            ticker.append(Ticker())
            err.print(f"{label}: {start.format(total=f'{total:,}')}", highlight=False)
        if ticker[0].due(done, total):
            err.print(f"{label}: {done:,}/{total:,} {unit}, {ticker[0].timing(done, total)}", highlight=False)

    return update


def _print_rounding(m) -> None:
    """How a post-training checkpoint's weights were rounded, when its recipe rounds with GPTQ."""
    gptq = m.recipe.spec.get("gptq")
    gptq = gptq if isinstance(gptq, dict) else {}  # the spec is free-form data a checkpoint brings
    on = str(gptq.get("calibrated_on") or "")
    if m.training is None and on.startswith("not used: "):
        out.print(f"  rounding        to nearest (GPTQ {_shown(on)})")
    elif m.training is None and on:
        out.print(f"  rounding        GPTQ on {_shown(on)}")


def _print_architecture(m, config: dict) -> None:
    named = (config.get("architectures") or [None])[0]
    if m.base_model.architecture and named and m.base_model.architecture != named:
        out.print(f"  loads as        {_shown(m.base_model.architecture)} (config.json names {_shown(named)}, "
                  "whose head the weights lack)")


def _print_fidelity(m) -> None:
    if m.fidelity is not None:
        out.print(f"  fidelity        cosine {m.fidelity.value:.4f} to the dense model's embeddings "
                  f"({_shown(m.fidelity.measured_on)}, before any fine-tuning)")


def _print_result(verb: str, result, model_name: str) -> None:
    m = result.manifest
    sizes = m.sizes
    codecs_used = sorted({e.codec.describe() for e in m.modules.values()})
    out.print(f"{verb} {model_name} with recipe {m.recipe.name} in {result.seconds:.1f} s -> {result.path}")
    out.print(
        f"  checkpoint      {_mb(sizes.checkpoint_nbytes)}  ({sizes.checkpoint_ratio:.2f}x smaller than "
        f"{_mb(sizes.source_nbytes)})"
    )
    out.print(
        f"  encoder linear  {_mb(sizes.encoder_linear_nbytes)}  ({sizes.encoder_linear_ratio:.2f}x smaller than fp32 "
        f"{_mb(sizes.encoder_linear_fp32_nbytes)})"
    )
    if m.modules or m.structure is None:
        out.print(f"  modules         {len(m.modules)} compressed: {', '.join(codecs_used)}")
    _print_architecture(m, json.loads((result.path / "config.json").read_text()))
    _print_rounding(m)
    _print_fidelity(m)
    if m.structure is not None:
        st = m.structure
        out.print(f"  pruned          heads per layer {st.attention_heads} (of {st.heads_before}), FFN widths "
                  f"{st.intermediate_sizes} (of {st.intermediate_size_before})")


RecipeOpt = Annotated[
    str, typer.Option("--recipe", "-r", help="Built-in recipe name (see `zoo recipes`) or a path to a recipe YAML.")
]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace OUT if it is empty or an earlier zoo output (never a directory holding other files).")]
ShardOpt = Annotated[
    str, typer.Option("--max-shard-size", help="Split weights into safetensors shards of at most this size.")
]


def _load_recipe(recipe: str, target_ratio: float | None):
    """The recipe, with --target-ratio applied to its search section (refused for a recipe without one)."""
    from .recipes import load_recipe

    spec = load_recipe(recipe)
    if target_ratio is not None:
        if spec.search is None:
            raise ZooError(f"--target-ratio applies to search recipes; {spec.name} fixes its codecs",
                           hint="use --recipe search --target-ratio 12, or leave --target-ratio out")
        if not target_ratio > 1:
            raise ZooError(f"--target-ratio must be above 1 (got {target_ratio:g})", hint="e.g. --target-ratio 12")
        spec = spec.model_copy(update={"search": spec.search.model_copy(update={"target_ratio": target_ratio})})
    return spec


def _run_compact(
    model: str, recipe: str, out_dir: Path | None, revision: str | None, overwrite: bool, max_shard_size: str,
    *, pack: bool, target_ratio: float | None = None, calibration: Path | None = None, allow_untrained: bool = False,
) -> None:
    from zoo.formats import SafetensorsDir

    from .compress import write_compact
    from .resolve import resolve_model

    spec = _load_recipe(recipe, target_ratio)
    target = out_dir or Path(f"{Path(model.rstrip('/')).name}-{spec.name}")
    shard_bytes = _parse_size(max_shard_size)
    resolved = resolve_model(model, revision)
    source = SafetensorsDir(resolved.path)
    total = sum(source.nbytes(name) for name in source.names())
    with _progress() as bar:
        searching = bar.add_task("searching", total=None, visible=False, unit="(module, setting) pairs")
        rounding = bar.add_task("rounding (GPTQ)", total=None, visible=False, unit="modules")
        task = bar.add_task("packing" if pack else "compressing", total=total, unit="bytes")
        searched = _stage("search", "(module, setting) pairs measured", bar, searching,
                          start="measuring {total} (module, setting) pairs")
        rounded = _stage("GPTQ", "modules rounded", bar, rounding, start="rounding {total} modules")

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
            f"compressing to recover it:\n  zoo compress {escape(model)} --recipe {escape(recipe)} --task TASK --data DIR",
            highlight=False,
        )


TaskOpt = Annotated[str, typer.Option("--task", "-t", help="rotten_tomatoes, sst2, text-classification, fashion_mnist, "
                                      "image-classification (or fidelity for `zoo eval`).")]
DataOpt = Annotated[
    str | None,
    typer.Option("--data", "-d", help="Directory with train/validation/test files (.tsv/.csv/.jsonl, idx, npz), "
                 "or a Hugging Face dataset name \\[default: the task's hub dataset]."),
]
TextColOpt = Annotated[str | None, typer.Option("--text-column", help="Column holding the text \\[default: sentence or text].")]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="Column holding the label \\[default: label].")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, or auto (cuda when available).")]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Use a seeded random subset of this many examples per split (quick checks).")
]


TaskNameOpt = Annotated[str | None, typer.Option(
    "--task-name", help="The name results are recorded under (manifest, card) \\[default: the data's dataset card "
    "pretty_name, else its folder's name, else the hub dataset].")]
LabelNamesOpt = Annotated[str | None, typer.Option(
    "--label-names", help="Comma-separated names of integer labels 0..N-1, e.g. World,Sports,Business "
    "\\[default: labels.txt beside the data, else the numbers; string labels are their own names].")]


def _task(name: str, data: str | None, text_column: str | None, label_column: str | None,
          task_name: str | None = None, label_names: str | None = None):
    from .tasks import get_task

    return get_task(name, data, text_column=text_column, label_column=label_column, task_name=task_name,
                    label_names=_names(label_names))


def _names(label_names: str | None) -> list[str] | None:
    """--label-names a,b,c as a list."""
    return [n.strip() for n in label_names.split(",")] if label_names is not None else None


@app.command()
@_fails_cleanly
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
        typer.Option("--task", "-t", help="Fine-tune the compressed model on this task with distillation "
                     "(rotten_tomatoes, sst2, text-classification, ...). Without it: post-training only."),
    ] = None,
    data: DataOpt = None,
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Fine-tuned dense model to distil from \\[default: MODEL if it "
                                    "has the task's head, else MODEL fine-tuned first].")
    ] = None,
    epochs: Annotated[float | None, typer.Option(
        min=0, help="Student training epochs \\[default: the recipe's]. 0: no training, the compressed teacher is "
        "evaluated as it is (a search recipe still measures its layers on the task).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", "--lr", help="Student learning rate \\[default: the recipe's].")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Student examples per step \\[default: the recipe's].")] = None,
    teacher_epochs: Annotated[float, typer.Option(help="Epochs when the teacher is fine-tuned here.")] = 2.0,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    task_name: TaskNameOpt = None,
    label_names: LabelNamesOpt = None,
    device: DeviceOpt = "cpu",
    limit: LimitOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last epoch checkpoint in OUT.work/.")] = False,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", min=8, help="With --task: tokens per text example, in training and scoring \\[default: the "
        "length the teacher was trained with, else the recipe's, else 64].")] = None,
    target_ratio: Annotated[
        float | None, typer.Option("--target-ratio",
                                   help="Search recipes: how many times smaller than the dense model the whole "
                                   "checkpoint must be \\[default: the recipe's].")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option("--calibration", help="Post-training only: text to measure on, for recipes that "
                                  "round with GPTQ and for a search's sensitivity: a .txt file (one text per line) or "
                                  "a data directory (its train split's texts) \\[default: built-in sample sentences].")
    ] = None,
    allow_untrained: Annotated[bool, typer.Option(
        "--allow-untrained", help="Post-training only: write a recipe that needs --task (kron-8x, kron-19x) "
        "without fine-tuning; its fidelity is reported.")] = False,
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
        training_only = {"--data": data, "--teacher": teacher, "--epochs": epochs, "--learning-rate": learning_rate,
                         "--batch-size": batch_size, "--limit": limit, "--resume": resume or None,
                         "--max-length": max_length, "--task-name": task_name, "--label-names": label_names}
        given = [name for name, value in training_only.items() if value is not None]
        if given:
            raise ZooError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} with --task", hint="add --task to fine-tune while compressing")
        _run_compact(model, recipe, out_dir, revision, overwrite, max_shard_size, pack=False, target_ratio=target_ratio,
                     calibration=calibration, allow_untrained=allow_untrained)
        return
    if calibration is not None:
        raise ZooError("--calibration applies to post-training compression; with --task the student is fine-tuned "
                       "on the task's data", hint="leave out --calibration (or --task)")
    if allow_untrained:
        raise ZooError("--allow-untrained applies to post-training compression; with --task the model is trained",
                       hint="leave out --allow-untrained (or --task)")
    from .resolve import resolve_model
    from .train.pipeline import compress_with_training
    from .train.progress import RichProgress

    spec = _load_recipe(recipe, target_ratio)
    target = out_dir or Path(f"{Path(model.rstrip('/')).name}-{spec.name}-{task}")
    task_spec = _task(task, data, text_column, label_column, task_name, label_names)
    resolved = resolve_model(model, revision)
    result = compress_with_training(
        resolved, spec, task_spec, target, teacher=teacher, epochs=epochs, learning_rate=learning_rate,
        batch_size=batch_size, teacher_epochs=teacher_epochs, device=device, limit=limit, resume=resume,
        overwrite=overwrite, max_length=max_length,
        callbacks=lambda stage: [RichProgress(f"{'fine-tuning teacher' if stage == 'teacher' else 'training ' + spec.name}", err)],
        search_progress=_stage("search", "(module, setting) pairs measured", start="measuring {total} (module, setting) "
                               "pairs on the task"),
    )
    _print_result("Compressed", result, model)
    s = result.scores
    teacher_acc, student_acc = s.teacher_test.value, s.compressed_test.value
    out.print(f"  teacher         {result.teacher}")
    out.print(f"  test accuracy   teacher {teacher_acc:.4f}, compressed {student_acc:.4f} "
              f"(retention {student_acc / teacher_acc:.2%}, agreement {s.agreement.value:.2%}, "
              f"{s.compressed_test.n_examples} examples, {result.manifest.training.max_length} tokens each)")
    out.print(f"  val accuracy    teacher {s.teacher_validation.value:.4f}, "
              f"compressed {s.compressed_validation.value:.4f}")




@app.command()
@_fails_cleanly
def finetune(
    model: Annotated[str, typer.Argument(help="Local directory, Hugging Face id, or alias (minilm, bert-base, ...).")],
    task: TaskOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory for the fine-tuned dense model.")],
    data: DataOpt = None,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 2.0,
    learning_rate: Annotated[float, typer.Option("--learning-rate", "--lr", help="Peak learning rate.")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Examples per step.")] = 32,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", min=8, help="Tokens per text example, in training and scoring; recorded with the model, so "
        "`zoo compress --task` and `zoo eval` use it too \\[default: 64].")] = None,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    task_name: TaskNameOpt = None,
    label_names: LabelNamesOpt = None,
    device: DeviceOpt = "cpu",
    limit: LimitOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last epoch checkpoint of OUT.work/.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune a dense model on a task: the baseline (teacher) that compression is measured against.

    Example: [bold]zoo finetune minilm --task rotten_tomatoes --data tests/data/rotten_tomatoes --out minilm-rt[/bold]
    """
    from .resolve import resolve_model
    from .train.finetune import finetune as run_finetune
    from .train.progress import RichProgress

    spec = _task(task, data, text_column, label_column, task_name, label_names)
    resolved = resolve_model(model)
    result = run_finetune(
        resolved, spec, out_dir, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
        max_length=max_length, device=device, limit=limit, resume=resume, overwrite=overwrite,
        callbacks=[RichProgress(f"fine-tuning {model}", err)],
    )
    out.print(f"Fine-tuned {model} on {escape(spec.dataset)} at {result.max_length} tokens per example in "
              f"{result.seconds / 60:.1f} min -> {result.path}")
    for score in (result.validation, result.test):
        out.print(f"  {score.split:10s} {score.metric} {score.value:.4f} ({score.n_examples} examples)")


@app.command("eval")
@_fails_cleanly
def eval_(
    model_dir: Annotated[Path, typer.Argument(help="A model directory: zoo checkpoint or plain dense.")],
    task: TaskOpt,
    data: DataOpt = None,
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    reference: Annotated[
        str | None, typer.Option(help="fidelity only: the dense model to compare with \\[default: the manifest's teacher or base model].")
    ] = None,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    task_name: TaskNameOpt = None,
    label_names: LabelNamesOpt = None,
    limit: LimitOpt = None,
    mode: Annotated[str, typer.Option(help="Execution mode for zoo checkpoints: materialize, packed or kernel.")] = "materialize",
    max_length: Annotated[
        int | None, typer.Option("--max-length", min=8, help="Tokens per text example \\[default: as trained, else 64].")
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
    from .tasks.evaluation import run_eval

    result = run_eval(model_dir, task, data=data, split=split, reference=reference, text_column=text_column,
                      label_column=label_column, limit=limit, mode=mode, max_length=max_length, task_name=task_name,
                      label_names=_names(label_names))
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    for key, value in result.metrics.items():
        out.print(f"{key:12s} {value:.4f}")
    length = f", {result.max_length} tokens each" if result.max_length else ""
    out.print(f"[dim]{escape(result.model)} on {escape(result.dataset)} {result.split}, "
              f"{result.n_examples} examples{length}[/dim]")


@app.command()
@_fails_cleanly
def pack(
    model_dir: Annotated[str, typer.Argument(help="Dense checkpoint whose weights are already compressed.")],
    recipe: RecipeOpt,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory \\[default: ./DIR-RECIPE].")
    ] = None,
    overwrite: OverwriteOpt = False,
    max_shard_size: ShardOpt = "2GB",
) -> None:
    """Store a checkpoint compressed elsewhere (weights already N:M sparse, on an int grid, or
    drawn from a codebook) in the compact format. Refuses weights that do not fit the recipe."""
    _run_compact(model_dir, recipe, out_dir, None, overwrite, max_shard_size, pack=True)


@app.command()
@_fails_cleanly
def unpack(
    model_dir: Annotated[Path, typer.Argument(help="A zoo checkpoint directory.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory \\[default: ./DIR-dense].")
    ] = None,
    overwrite: OverwriteOpt = False,
    max_shard_size: ShardOpt = "2GB",
) -> None:
    """Write a plain dense checkpoint (safetensors + config.json) that any tool can load."""
    from zoo.loaders import unpack as unpack_checkpoint

    target = out_dir or Path(f"{model_dir.resolve().name}-dense")
    path = unpack_checkpoint(model_dir, target, overwrite=overwrite, max_shard_bytes=_parse_size(max_shard_size))
    out.print(f"Unpacked {model_dir} -> {path}")


def _dir_or_pull(model: str, registry: str | None, revision: str | None) -> Path:
    """A directory as it is; a registry name (zoo:..., or anything with --registry) pulled and verified."""
    path = Path(model)
    if registry is None and revision is None and (path.exists() or not model.startswith("zoo:")):
        return path
    from .registry import pull as pull_model

    with _quiet_hub(), err.status(f"pulling {model}"):
        return pull_model(model, revision=revision, registry=registry, token=_token(None))


@app.command()
@_fails_cleanly
def info(
    model: Annotated[str, typer.Argument(help="A zoo checkpoint directory, or a registry name (zoo:NAME\\[@REV]).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts (results, layers, manifest) as JSON.")] = False,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Registry to pull NAME from \\[default: $ZOO_REGISTRY, else local].",
                                 show_default=False)
    ] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Revision of NAME \\[default: the latest].")] = None,
) -> None:
    """Show what a zoo checkpoint holds: recipe, base model, results against the teacher, sizes and
    every compressed module (the facts its model card shows). The checkpoint is fully verified
    (manifest, tensors, sha256) first; a NAME is pulled (verified) into the cache first.

    Examples:
      [bold]zoo info minilm-4bit-2of4[/bold]
      [bold]zoo info zoo:minilm-l6/rotten-tomatoes/4bit-2of4 --json[/bold]
    """
    from dataclasses import asdict

    from zoo.cards import layer_rows, other_tensors_nbytes, results
    from zoo.formats import Checkpoint

    model_dir = _dir_or_pull(model, registry, revision)
    ckpt = Checkpoint.open(model_dir)
    m = ckpt.manifest
    res = results(m)
    layers = layer_rows(m)
    if as_json:
        facts = {
            "path": str(model_dir),
            "results": {**{k: v for k, v in asdict(res).items() if k != "extra"}, "measured": res.measured},
            "layers": [asdict(r) for r in layers],
            "manifest": m.model_dump(mode="json"),
        }
        out.print_json(json.dumps(facts))
        return
    s = m.sizes
    out.print(f"[bold]{_shown(model_dir)}[/bold]  zoo format {m.format_version}, written by zoo {_shown(m.zoo_version)}")
    out.print(f"  base model      {_shown(m.base_model.id)} ({m.base_model.source}, revision {_shown(m.base_model.revision)})")
    out.print(f"  recipe          {_shown(m.recipe.name)}: {_shown(m.recipe.spec.get('description', ''))}")
    out.print(f"  checkpoint      {_mb(s.checkpoint_nbytes)} ({s.checkpoint_ratio:.2f}x smaller than the source)")
    out.print(f"  encoder linear  {_mb(s.encoder_linear_nbytes)} ({s.encoder_linear_ratio:.2f}x vs fp32)")
    _print_architecture(m, ckpt.config)
    _print_rounding(m)
    _print_fidelity(m)
    if m.training is not None:
        t = m.training
        kept = f", layers {t.keep_layers} of the teacher" if t.keep_layers else ""
        out.print(f"  trained         on {_shown(t.dataset)}: {t.epochs:g} epochs, {t.steps} steps, {t.seconds / 60:.1f} "
                  f"min on {_shown(t.device)}, distilled from {_shown(t.teacher)}{kept}"
                  + (f", {t.max_length} tokens per example" if t.max_length else ""))
        if t.labels:
            out.print(f"  labels          {_shown(', '.join(t.labels))}")
    if m.evaluation:
        for r in m.evaluation:
            out.print(f"  {r.role:15s} {_shown(r.metric)} {r.value:.4f} on {_shown(r.dataset)} {_shown(r.split)} "
                      f"({r.n_examples} examples)")
    else:
        out.print("  evaluation      none recorded (compressed without --task; measure with `zoo eval DIR --task ...`)")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    title = f"results on {res.dataset} {res.split} ({res.n_examples} examples)" if res.measured else "sizes"
    summary = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    summary.add_column("model", overflow="fold")
    for col in ("accuracy", "retention", "size", "ratio", "enc-linear ratio"):
        summary.add_column(col, justify="right", no_wrap=True)
    for r in res.rows:
        summary.add_row(_shown(r.model), pct(r.value), pct(r.retention), _mb(r.size_bytes), f"{r.checkpoint_ratio:.2f}x",
                        f"{r.encoder_linear_ratio:.2f}x")
    out.print(summary)
    if res.agreement is not None:
        out.print(f"  agreement with the teacher: {pct(res.agreement)}")

    if m.structure is not None:
        st = m.structure
        out.print(f"  pruned          heads per layer {st.attention_heads} (of {st.heads_before}), FFN widths "
                  f"{st.intermediate_sizes} (of {st.intermediate_size_before}); plain dense layers")
    if layers:
        table = Table(title="compressed modules", title_justify="left", show_edge=False, header_style="bold")
        # module names are what people grep for: never elide them, fold them if the terminal is narrow
        table.add_column("module", overflow="fold", min_width=max(map(len, m.modules)))
        for col in ("codec", "bits", "sparsity", "bytes", "ratio"):
            table.add_column(col, justify="left" if col == "codec" else "right", no_wrap=True)
        for r in layers:
            shared = f" (shared with {', '.join(r.tied)})" if r.tied else ""
            table.add_row(_shown(r.module + shared), _shown(r.method), f"{r.bits:.3g}", f"{100 * r.sparsity:.0f}%",
                          f"{r.nbytes:,}", f"{r.ratio:.2f}x")
        out.print(table)
    out.print(f"  other tensors (norms, biases, heads, any layer no rule took, file headers): "
              f"{_mb(other_tensors_nbytes(m))}")


@app.command()
@_fails_cleanly
def verify(
    model: Annotated[str, typer.Argument(help="A zoo checkpoint directory, or a registry name (zoo:NAME\\[@REV]).")],
    registry: Annotated[
        str | None, typer.Option("--registry", help="Registry to pull NAME from \\[default: $ZOO_REGISTRY, else local].",
                                 show_default=False)
    ] = None,
) -> None:
    """Check every byte of a zoo checkpoint: the sha256 of every file against the manifest, every safetensors
    header, and every module's tensors against its codec. A pull does this as files arrive; a plain load
    checks only what is cheap (sizes, headers, config.json's settings), so run this on a copy you did not pull.

    Example: [bold]zoo verify minilm-4bit-2of4[/bold]
    """
    from zoo.formats import Checkpoint

    model_dir = _dir_or_pull(model, registry, None)
    ckpt = Checkpoint.open(model_dir, verify=True)
    files = ckpt.manifest.files
    if not files:
        raise ZooError(f"{model_dir} records no file hashes (re-saved by transformers' save_pretrained?): its structure "
                       "is sound, but nothing can be checked byte for byte", hint="compress or pull it again")
    out.print(f"Verified {_shown(model_dir)}: {len(files)} files ({_mb(sum(f.nbytes for f in files.values()))}) match "
              f"their sha256, {len(ckpt.manifest.modules)} modules fit their codecs", highlight=False)


@app.command()
@_fails_cleanly
def card(
    model_dir: Annotated[Path, typer.Argument(help="A zoo checkpoint directory.")],
    name: Annotated[
        str | None, typer.Option("--name", help="The repo id or stub people load it by \\[default: the directory's name].")
    ] = None,
    sibling: Annotated[
        list[Path] | None,
        typer.Option("--sibling", help="Another zoo checkpoint to plot beside this one (repeatable)."),
    ] = None,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Also plot the models this registry lists (local, hf, a path...).",
                                 show_default=False)
    ] = None,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw the accuracy-vs-size plot (needs matplotlib).")] = True,
) -> None:
    """(Re)generate the model card: README.md with Hub metadata (model-index), results against the teacher,
    how to load it, the recipe, a per-layer table, and a PNG plot of accuracy against size.
    Every number is read from the manifest. `zoo compress` writes one already; run this after new
    evaluations, or to plot sibling models.

    Examples:
      [bold]zoo card minilm-4bit-2of4-rt --sibling minilm-int8-rt --sibling minilm-binary-rt[/bold]
      [bold]zoo card minilm-4bit-2of4-rt --registry local[/bold]   (plot the models the local registry lists)
    """
    from zoo.cards import manifest_of, point_of, results, write_card
    from zoo.formats import Checkpoint

    own = results(Checkpoint.open(model_dir).manifest)  # a card describes a verified checkpoint
    points = []
    for other in sibling or []:
        manifest, _ = manifest_of(other)
        theirs = results(manifest)
        point = point_of(other.resolve().name, manifest)
        if point is None:
            err.print(f"[yellow]note:[/yellow] {escape(str(other))} has no recorded accuracy; not plotted", highlight=False)
        elif (theirs.dataset, theirs.split) != (own.dataset, own.split):
            err.print(f"[yellow]note:[/yellow] {escape(str(other))} was measured on {theirs.dataset} {theirs.split}, "
                      f"not {own.dataset} {own.split}; not plotted", highlight=False)
        else:
            points.append(point)
    if registry is not None:
        points += _registry_points(registry, own, exclude=name)
    files = write_card(model_dir, name=name, siblings=points, draw_plot=plot)
    written = [files.readme, files.plot, files.eval_results]
    out.print(f"Wrote the card of {model_dir}: " + ", ".join(str(p.relative_to(model_dir)) for p in written if p))
    if files.plot is not None:
        out.print(f"  plotted beside its teacher and {len(points)} other model(s)"
                  + (f": {', '.join(p.label for p in points)}" if points else ""))
    if files.plot is None and plot:
        out.print("[dim]no plot: " + ("matplotlib is not installed (pip install 'zoo-compress[cards]')"
                                      if _card_has_results(files) else "no accuracy is recorded") + "[/dim]")


def _registry_points(registry: str | None, own, exclude: str | None = None, token: str | None = None) -> list:
    """Plot points for the models a registry lists that were measured like this one (same metric, dataset
    and split), read from its index."""
    from zoo.cards import Point

    from .registry import list_models

    with _quiet_hub():
        models = list_models(registry=registry, token=token).models
    points = []
    skip = {exclude, f"zoo:{exclude}"} if exclude else set()
    for m in models:
        res = m.result
        if m.name in skip or res is None or (res.metric, res.dataset, res.split) != (own.metric, own.dataset, own.split):
            continue
        points.append(Point(m.name.removeprefix("zoo:"), m.checkpoint_nbytes, res.value, "sibling"))
    return points


def _card_has_results(files) -> bool:
    return files.card.data.eval_results is not None


@app.command()
@_fails_cleanly
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe's YAML.")] = None,
) -> None:
    """List the built-in recipes, or print one as YAML (copy it to start your own)."""
    from .recipes import builtin_names, builtin_text, load_recipe

    if name is not None:
        load_recipe(name)  # unknown names fail with suggestions
        # plain text: rich would take `kinds: [linear]` for markup and print `kinds: `
        text = builtin_text(name) if name in builtin_names() else Path(name).read_text()
        out.print(text, highlight=False, markup=False, soft_wrap=True, end="" if text.endswith("\n") else "\n")
        return
    table = Table(show_edge=False, header_style="bold")
    table.add_column("recipe")
    table.add_column("what it does")
    for recipe_name in builtin_names():
        table.add_row(recipe_name, load_recipe(recipe_name).description)
    out.print(table)


# -- registry: upload, pull (download), list ----------------------------------------------------------

RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", help="local, hf, hf:NAMESPACE, a folder, or the http(s):// URL of a Hub-compatible "
                 "server \\[default: $ZOO_REGISTRY, else local ($ZOO_HOME)].", show_default=False),
]
# read from HF_TOKEN in the command, not by click's envvar: a value click knows may show up in --help
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Hugging Face token \\[default: $HF_TOKEN, else huggingface_hub's login]. Never printed.",
                 show_default=False),
]


def _token(token: str | None) -> str | None:
    return token or os.environ.get("HF_TOKEN") or None


def _quiet_hub():
    """huggingface_hub's own progress bars off: the CLI prints one line of its own."""
    from huggingface_hub.utils import disable_progress_bars

    return disable_progress_bars()


@contextlib.contextmanager
def _upload_source(model_dir: Path, name: str, registry: str | None, token: str | None, card: bool):
    """What to upload: with `card`, a linked copy of DIR whose model card is regenerated to name NAME and plot
    the registry's siblings (the card files are written anew, so DIR itself is never modified); else DIR."""
    if not card:
        yield model_dir
        return
    from zoo.cards import results, write_card
    from zoo.formats import Checkpoint

    from .registry import parse_name

    ref = parse_name(name)
    own = results(Checkpoint.open(model_dir, verify=False).manifest)
    siblings = _registry_points(registry, own, exclude=ref.name, token=token) if own.measured else []
    with tempfile.TemporaryDirectory(prefix="zoo-upload-") as tmp:
        staged = Path(tmp) / model_dir.name
        # symlinks stay links (the registry refuses them); files are hard links where the filesystem allows
        shutil.copytree(model_dir, staged, symlinks=True, copy_function=_link_or_copy)
        write_card(staged, name=f"{'zoo:' if ref.stub else ''}{ref.name}", siblings=siblings)
        yield staged


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@app.command()
@_fails_cleanly
def upload(
    model_dir: Annotated[Path, typer.Argument(help="A zoo checkpoint directory (its README.md, the model card, goes too).")],
    name: Annotated[str, typer.Argument(help="zoo:PARTS/OF/NAME, or owner/name for a Hub repo id.")],
    registry: RegistryOpt = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private (hub registries).")] = False,
    token: TokenOpt = None,
    card: Annotated[
        bool, typer.Option("--card/--no-card", help="Publish a regenerated model card that names NAME and plots the "
                           "registry's measured models beside this one (DIR itself is not modified). Without it "
                           "DIR's files are published exactly as they are.")
    ] = False,
    include_hidden: Annotated[bool, typer.Option(
        "--include-hidden", help="Publish hidden files too (.env, .DS_Store...), which are left out and named by "
        "default; `.eval_results/` (the card's results) always goes.")] = False,
) -> None:
    """Publish a zoo checkpoint under NAME: verified first, every file's sha256 recorded in the
    registry's index, which gives it a revision. With --card the published model card names NAME.

    Examples:
      [bold]zoo upload minilm-4bit-2of4 zoo:minilm-l6/rotten-tomatoes/4bit-2of4[/bold]
      [bold]zoo upload minilm-4bit-2of4 zoo:minilm-l6/rotten-tomatoes/4bit-2of4 --registry hf:my-org --private[/bold]
    """
    from .registry import open_registry

    reg = open_registry(registry, token=_token(token))
    if private and reg.kind == "local":
        err.print("[yellow]note:[/yellow] --private has no meaning for a local registry; ignored", highlight=False)
    with _upload_source(model_dir, name, registry, _token(token), card) as source, _quiet_hub(), \
            err.status(f"uploading {model_dir} to {reg.where}"):
        published = reg.upload(source, name, private=private, include_hidden=include_hidden)
    out.print(f"Uploaded {model_dir} as zoo:{published.name}@{published.revision} ({published.nfiles} files, "
              f"{_mb(published.nbytes)}) -> {published.location}", highlight=False)
    if published.skipped:
        err.print(f"[yellow]note:[/yellow] hidden files not uploaded: {_shown(', '.join(published.skipped))} "
                  "(--include-hidden publishes them)", highlight=False)
    if not (model_dir / "README.md").is_file():
        err.print(f"[yellow]note:[/yellow] uploaded without a model card: `zoo card {escape(str(model_dir))}` writes "
                  "README.md; upload again to publish it", highlight=False)


@_fails_cleanly
def pull(
    name: Annotated[str, typer.Argument(help="zoo:NAME\\[@REVISION], a name the registry lists, or a Hub repo id.")],
    revision: Annotated[str | None, typer.Option("--revision", help="Revision to fetch \\[default: the latest].")] = None,
    registry: RegistryOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fetch a model by name into the local cache ($ZOO_HOME/cache), check every file's sha256, and
    print its path. A copy that fails a check is deleted; nothing unverified is left.

    Examples:
      [bold]zoo pull zoo:minilm-l6/rotten-tomatoes/4bit-2of4[/bold]
      [bold]python -c "import zoo; zoo.from_pretrained('$(zoo pull zoo:minilm-l6/rotten-tomatoes/4bit-2of4)')"[/bold]
    """
    from .registry import pull as pull_model

    with _quiet_hub(), err.status(f"pulling {name}"):
        path = pull_model(name, revision=revision, registry=registry, token=_token(token))
    out.print(str(path), highlight=False, soft_wrap=True)


app.command("pull")(pull)
app.command("download", help="Same as [bold]zoo pull[/bold]: fetch a model by name, verify it, print its path.")(pull)


@app.command("list")
@_fails_cleanly
def list_(
    registry: RegistryOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """List the models a registry holds: name, revision, recipe, size, ratios and the measured result,
    read from the registry's index (recorded from each manifest at upload)."""
    from .registry import list_models

    with _quiet_hub():
        listing = list_models(registry=registry, token=_token(token))
    if as_json:
        out.print_json(json.dumps(listing.to_json()))
        return
    where, rows = listing
    if not rows:
        out.print(f"{where} holds no models yet (add one with `zoo upload DIR NAME`)", highlight=False)
        return
    table = Table(show_edge=False, header_style="bold", title=where, title_justify="left")
    table.add_column("name", overflow="fold", min_width=max(len(r.name) for r in rows))  # never elide names
    table.add_column("revision", min_width=12, no_wrap=True)
    for col in ("recipe", "size", "ratio", "linear ratio", "result", "measured on"):
        table.add_column(col, justify="right" if col in ("size", "ratio", "linear ratio", "result") else "left",
                         overflow="fold")
    for r in rows:
        res = r.result
        value = "-" if res is None else f"{res.value:.2%}" if res.metric == "accuracy" else f"{res.value:.4f}"
        table.add_row(_shown(r.name), _shown(r.revision[:12]), _shown(r.recipe), _mb(r.size_nbytes),
                      f"{r.checkpoint_ratio:.2f}x", f"{r.encoder_linear_ratio:.2f}x", value,
                      _shown(f"{res.metric}, {res.dataset} {res.split}") if res else "-")
    out.print(table)
