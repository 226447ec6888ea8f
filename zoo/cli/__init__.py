"""The `zoo` command line. Thin: parse, call the library, print.

One module per command group: model (compress, finetune, eval), checkpoint (pack, unpack, info, verify, card),
export, registry (upload, pull/download, list); common holds what they share. Every deliberate failure is a
ZooError: printed as one line (with its hint), exit status 1. Ctrl-C exits with 130, SIGTERM with 143
(zoo.console); outputs are written atomically, so nothing half-written remains."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape

from .. import __version__
from . import checkpoint, export, model, recipes, registry
from .common import _rank_prefix, err, out
from .common import fails_cleanly as _fails_cleanly  # the name tests and older callers know

app = typer.Typer(
    name="zoo",
    help="Compress transformers 10-50x, store them in a compact verified format, and load them back.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        out.print(f"zoo {__version__}")
        raise typer.Exit()


LAUNCHABLE = ("compress", "finetune", "eval")  # the commands that run as several processes (zoo.distributed)


def _one_voice(command: str | None) -> None:
    """Under torchrun / accelerate launch, only rank 0 prints results and progress; the other ranks say only what
    goes wrong. Commands that do not train refuse to run as several processes, which would each write alike."""
    from .. import distributed

    if not distributed.launched():
        return
    if command not in LAUNCHABLE:
        err.print(
            f"{escape(_rank_prefix())}[bold red]error:[/bold red] zoo {command} runs as one process, not under "
            f"torchrun or accelerate launch (WORLD_SIZE={distributed.world_size()}) [dim](hint: run it without a "
            f"launcher; {', '.join(LAUNCHABLE)} run data-parallel)[/dim]",
            highlight=False,
        )
        raise typer.Exit(1)
    if not distributed.is_main():
        import logging

        out.quiet = True
        logging.getLogger("zoo").setLevel(logging.WARNING)


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show transformers' own loading bars and "
            "reports, which zoo hides where it expects them (a new head, a base model).",
        ),
    ] = False,
) -> None:
    """zoo: a model zoo and checkpoint registry for deeply compressed transformers."""
    _one_voice(ctx.invoked_subcommand)
    if verbose:
        from zoo.loaders.auto import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


# in the order `zoo --help` lists them
app.command()(model.compress)
app.command()(model.finetune)
app.command("eval")(model.eval_)
app.command()(checkpoint.pack)
app.command()(checkpoint.unpack)
app.command()(checkpoint.info)
app.command()(checkpoint.verify)
app.command()(checkpoint.card)
app.command()(export.export)
app.command()(recipes.recipes)
app.command()(registry.upload)
app.command("pull")(registry.pull)
app.command("download", help="Same as [bold]zoo pull[/bold]: fetch a model by name, verify it, print its path.")(
    registry.pull
)
app.command("list")(registry.list_)

__all__ = ["_fails_cleanly", "app", "err", "out"]
