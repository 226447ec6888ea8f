"""The `zoo` command line. Thin: parse, call the library, print.

Every deliberate failure is a ZooError: printed as one line (with its hint), exit status 1.
Ctrl-C exits with 130; outputs are written atomically, so nothing half-written remains."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .errors import ZooError

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
        except KeyboardInterrupt:
            err.print("interrupted; no output was written")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"zoo {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """zoo: a model zoo and checkpoint registry for deeply compressed transformers."""


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


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,  # the summary replaces the bar; an error stays the only line
    )


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
    out.print(f"  modules         {len(m.modules)} compressed: {', '.join(codecs_used)}")


RecipeOpt = Annotated[
    str, typer.Option("--recipe", "-r", help="Built-in recipe name (see `zoo recipes`) or a path to a recipe YAML.")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")]
ShardOpt = Annotated[
    str, typer.Option("--max-shard-size", help="Split weights into safetensors shards of at most this size.")
]


def _run_compact(
    model: str, recipe: str, out_dir: Optional[Path], revision: Optional[str], overwrite: bool, max_shard_size: str,
    *, pack: bool,
) -> None:
    from formats import SafetensorsDir

    from .compress import write_compact
    from .recipes import load_recipe
    from .resolve import resolve_model

    spec = load_recipe(recipe)
    target = out_dir or Path(f"{Path(model.rstrip('/')).name}-{spec.name}")
    shard_bytes = _parse_size(max_shard_size)
    resolved = resolve_model(model, revision)
    source = SafetensorsDir(resolved.path)
    total = sum(source.nbytes(name) for name in source.names())
    with _progress() as bar:
        task = bar.add_task("packing" if pack else "compressing", total=total)
        result = write_compact(
            resolved,
            spec,
            target,
            pack=pack,
            overwrite=overwrite,
            max_shard_bytes=shard_bytes,
            progress=lambda _name, nbytes: bar.advance(task, nbytes),
        )
    _print_result("Packed" if pack else "Compressed", result, model)


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
        Optional[Path], typer.Option("--out", "-o", help="Output directory [default: ./MODEL-RECIPE].")
    ] = None,
    revision: Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit).")] = None,
    overwrite: OverwriteOpt = False,
    max_shard_size: ShardOpt = "2GB",
) -> None:
    """Compress a dense model post-training (no fine-tuning) into the compact zoo format.

    Example: [bold]zoo compress minilm --recipe 4bit-2of4[/bold]
    """
    _run_compact(model, recipe, out_dir, revision, overwrite, max_shard_size, pack=False)


@app.command()
@_fails_cleanly
def pack(
    model_dir: Annotated[str, typer.Argument(help="Dense checkpoint whose weights are already compressed.")],
    recipe: RecipeOpt,
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Output directory [default: ./DIR-RECIPE].")
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
        Optional[Path], typer.Option("--out", "-o", help="Output directory [default: ./DIR-dense].")
    ] = None,
    overwrite: OverwriteOpt = False,
    max_shard_size: ShardOpt = "2GB",
) -> None:
    """Write a plain dense checkpoint (safetensors + config.json) that any tool can load."""
    from loaders import unpack as unpack_checkpoint

    target = out_dir or Path(f"{model_dir.resolve().name}-dense")
    path = unpack_checkpoint(model_dir, target, overwrite=overwrite, max_shard_bytes=_parse_size(max_shard_size))
    out.print(f"Unpacked {model_dir} -> {path}")


@app.command()
@_fails_cleanly
def info(
    model_dir: Annotated[Path, typer.Argument(help="A zoo checkpoint directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what a zoo checkpoint holds: recipe, base model, sizes and every compressed module.
    The checkpoint is fully verified (manifest, tensors, sha256) first."""
    from formats import Checkpoint

    ckpt = Checkpoint.open(model_dir)
    m = ckpt.manifest
    if as_json:
        out.print_json(json.dumps(m.model_dump(mode="json")))
        return
    s = m.sizes
    out.print(f"[bold]{model_dir}[/bold]  zoo format {m.format_version}, written by zoo {m.zoo_version}")
    out.print(f"  base model      {m.base_model.id} ({m.base_model.source}, revision {m.base_model.revision})")
    out.print(f"  recipe          {m.recipe.name}: {m.recipe.spec.get('description', '')}")
    out.print(f"  checkpoint      {_mb(s.checkpoint_nbytes)} ({s.checkpoint_ratio:.2f}x smaller than the source)")
    out.print(f"  encoder linear  {_mb(s.encoder_linear_nbytes)} ({s.encoder_linear_ratio:.2f}x vs fp32)")
    if m.evaluation:
        for r in m.evaluation:
            out.print(f"  {r.role:15s} {r.metric} {r.value:.4f} on {r.dataset} {r.split} ({r.n_examples} examples)")
    else:
        out.print("  evaluation      none recorded")
    from formats.codecs.base import DTYPES

    table = Table(show_edge=False, header_style="bold")
    # module names are what people grep for: never elide them, fold them if the terminal is narrow
    table.add_column("module", overflow="fold", min_width=max(map(len, m.modules)))
    for col in ("kind", "codec", "shape", "bytes", "ratio"):
        table.add_column(col, justify="right" if col in ("bytes", "ratio") else "left")
    for name, e in m.modules.items():
        original = e.numel * DTYPES[e.dtype].itemsize
        table.add_row(name, e.kind, e.codec.describe(), "x".join(map(str, e.shape)), f"{e.nbytes:,}", f"{original / e.nbytes:.2f}x")
    out.print(table)


@app.command()
@_fails_cleanly
def recipes(
    name: Annotated[Optional[str], typer.Argument(help="Show this recipe's YAML.")] = None,
) -> None:
    """List the built-in recipes, or print one as YAML (copy it to start your own)."""
    from .recipes import builtin_names, builtin_text, load_recipe

    if name is not None:
        load_recipe(name)  # unknown names fail with suggestions
        out.print(builtin_text(name) if name in builtin_names() else Path(name).read_text(), highlight=False)
        return
    table = Table(show_edge=False, header_style="bold")
    table.add_column("recipe")
    table.add_column("what it does")
    for recipe_name in builtin_names():
        table.add_row(recipe_name, load_recipe(recipe_name).description)
    out.print(table)
