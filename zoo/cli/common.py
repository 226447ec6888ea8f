"""What every command group shares: the two consoles, failing cleanly, printing what a checkpoint brings safely,
sizes, progress bars and lines, the options several groups take, and the Hub's quiet mode."""

from __future__ import annotations

import functools
import os
import re
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
from rich.text import Text

from ..console import Terminated, Ticker, signal_exit_code
from ..errors import ZooError

# typer 0.29's rich help gives flags a type column ("--overwrite <bool>") although they take no value
_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = (  # type: ignore[method-assign]  # a patch of typer's class, on purpose
    lambda self, ctx: None if self.is_flag else _option_type(self, ctx)
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fails_cleanly(fn):
    """A command whose ZooError is one line (with its hint) and exit status 1, and whose Ctrl-C or SIGTERM is
    one line and 130 or 143."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooError as exc:
            hint = f" [dim](hint: {escape(exc.hint)})[/dim]" if exc.hint else ""
            err.print(f"{escape(_rank_prefix())}[bold red]error:[/bold red] {escape(str(exc))}{hint}", highlight=False)
            raise typer.Exit(1) from None
        except (KeyboardInterrupt, Terminated, Exception) as exc:
            # a signal: its own exception, or whatever an extension it interrupted made of it (zoo.console)
            code = (
                143
                if isinstance(exc, Terminated)
                else 130
                if isinstance(exc, KeyboardInterrupt)
                else signal_exit_code()
            )
            if code is None and _lost_peer(exc):
                err.print(
                    f"{_rank_prefix()}error: another process of this job stopped ({_first_line(exc)}); no output "
                    "was written (fine-tuning runs continue with --resume)",
                    highlight=False,
                    markup=False,
                )
                raise typer.Exit(1) from None
            if code is None:
                raise
            what = "terminated" if code == 143 else "interrupted"
            err.print(
                f"{_rank_prefix()}{what}; no output was written (fine-tuning runs continue with --resume)",
                highlight=False,
                markup=False,
            )
            raise typer.Exit(code) from None

    return wrapper


def _lost_peer(exc: BaseException) -> bool:
    from .. import distributed

    return distributed.lost_peer(exc)


def _first_line(exc: BaseException) -> str:
    """The gist of a communication error: its first sentence, without the source location gloo puts first."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())
    gist = re.split(r"(?<=[a-z])\.\s", text.splitlines()[0] if text else "", maxsplit=1)[0]
    return gist[:160] or type(exc).__name__


def _rank_prefix() -> str:
    """`[rank N] ` on the ranks after the first of a launched job, so a line says which process wrote it."""
    from .. import distributed

    return f"[rank {distributed.rank()}] " if distributed.launched() and not distributed.is_main() else ""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """--max-shard-size: 500MB, 2GB, 1.5 GB, or bytes."""
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a size like 500MB or 2GB")
    unit = (match.group(2) or "B").upper()
    size = int(float(match.group(1)) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[unit])
    if size <= 0:
        raise typer.BadParameter("the shard size must be positive, like 500MB or 2GB")
    return size


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(value) -> str:
    """Text a checkpoint or registry brings, made safe to print: no control characters (terminal escape
    sequences), no rich markup."""
    return escape(_CONTROL.sub("?", str(value)))


def mb(nbytes: int) -> str:
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


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _Amount(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,  # the summary replaces the bar; an error stays the only line
        disable=not err.is_terminal,  # no bar to draw (and no blank line left behind); stage_callback prints lines
    )


def stage_callback(
    label: str, unit: str, bar: Progress | None = None, task_id=None, *, start: str, lines: bool | None = None
):
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


def note(text: str) -> None:
    """A yellow `note:` line on stderr; `text` is markup (escape what it quotes)."""
    err.print(f"[yellow]note:[/yellow] {text}", highlight=False)


def print_made(loads_as, rounding, fidelity) -> None:
    """The lines `zoo compress` and `zoo info` both print of how a checkpoint was made: the class it loads as (when
    config.json names another), how a post-training checkpoint was rounded, and its fidelity to the dense model."""
    if loads_as is not None:
        out.print(
            f"  loads as        {shown(loads_as.architecture)} (config.json names {shown(loads_as.named)}, "
            "whose head the weights lack)"
        )
    if rounding is not None and not rounding.gptq:
        out.print(f"  rounding        to nearest (GPTQ {shown(rounding.on)})")
    elif rounding is not None:
        out.print(f"  rounding        GPTQ on {shown(rounding.on)}")
    if fidelity is not None:
        out.print(
            f"  fidelity        cosine {fidelity.value:.4f} to the dense model's embeddings "
            f"({shown(fidelity.measured_on)}, before any fine-tuning)"
        )


RecipeOpt = Annotated[
    str, typer.Option("--recipe", "-r", help="Built-in recipe name (see `zoo recipes`) or a path to a recipe YAML.")
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace OUT if it is empty or an earlier zoo output (never a directory holding other files).",
    ),
]
ShardOpt = Annotated[
    str, typer.Option("--max-shard-size", help="Split weights into safetensors shards of at most this size.")
]


def hf_token(given: str | None) -> str | None:
    """--token, else $HF_TOKEN (read here, not by click's envvar: a value click knows may show up in --help)."""
    return given or os.environ.get("HF_TOKEN") or None


def quiet_hub():
    """huggingface_hub's own progress bars off: the CLI prints one line of its own."""
    from huggingface_hub.utils import disable_progress_bars

    return disable_progress_bars()


def dir_or_pull(model: str, registry: str | None, revision: str | None) -> Path:
    """A directory as it is; a registry name (zoo:..., or anything with --registry) pulled and verified."""
    path = Path(model)
    if registry is None and revision is None and (path.exists() or not model.startswith("zoo:")):
        return path
    from ..registry import pull

    with quiet_hub(), err.status(f"pulling {model}"):
        return pull(model, revision=revision, registry=registry, token=hf_token(None))
