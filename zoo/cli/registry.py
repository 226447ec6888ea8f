"""Registry commands: `zoo upload`, `zoo pull` (and its other name, `zoo download`), `zoo list`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import err, fails_cleanly, hf_token, mb, note, out, quiet_hub, shown

RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="local, hf, hf:NAMESPACE, a folder, or the http(s):// URL of a Hub-compatible "
        "server \\[default: $ZOO_REGISTRY, else local ($ZOO_HOME)].",
        show_default=False,
    ),
]
# read from HF_TOKEN in the command (common.hf_token), not by click's envvar: a value click knows may show up in --help
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Hugging Face token \\[default: $HF_TOKEN, else huggingface_hub's login]. Never printed.",
        show_default=False,
    ),
]


@fails_cleanly
def upload(
    model_dir: Annotated[
        Path, typer.Argument(help="A zoo checkpoint directory (its README.md, the model card, goes too).")
    ],
    name: Annotated[str, typer.Argument(help="zoo:PARTS/OF/NAME, or owner/name for a Hub repo id.")],
    registry: RegistryOpt = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private (hub registries).")] = False,
    token: TokenOpt = None,
    card: Annotated[
        bool,
        typer.Option(
            "--card/--no-card",
            help="Publish a regenerated model card that names NAME and plots the "
            "registry's measured models beside this one (DIR itself is not modified). Without it "
            "DIR's files are published exactly as they are.",
        ),
    ] = False,
    include_hidden: Annotated[
        bool,
        typer.Option(
            "--include-hidden",
            help="Publish hidden files too (.env, .DS_Store...), which are left out and named by "
            "default; `.eval_results/` (the card's results) always goes.",
        ),
    ] = False,
) -> None:
    """Publish a zoo checkpoint under NAME: verified first, every file's sha256 recorded in the
    registry's index, which gives it a revision. With --card the published model card names NAME.

    Examples:
      [bold]zoo upload minilm-4bit-2of4 zoo:minilm-l6/rotten-tomatoes/4bit-2of4[/bold]
      [bold]zoo upload minilm-4bit-2of4 zoo:minilm-l6/rotten-tomatoes/4bit-2of4 --registry hf:my-org --private[/bold]
    """
    from ..registry import open_registry, staged_upload

    reg = open_registry(registry, token=hf_token(token))
    if private and reg.kind == "local":
        note("--private has no meaning for a local registry; ignored")
    with quiet_hub(), contextlib.ExitStack() as stack:
        source = model_dir  # as it is; with --card, a linked copy whose card names NAME (DIR is never modified)
        if card:
            source = stack.enter_context(staged_upload(model_dir, name, registry=registry, token=hf_token(token))).path
        with err.status(f"uploading {model_dir} to {reg.where}"):
            published = reg.upload(source, name, private=private, include_hidden=include_hidden)
    out.print(
        f"Uploaded {model_dir} as zoo:{published.name}@{published.revision} ({published.nfiles} files, "
        f"{mb(published.nbytes)}) -> {published.location}",
        highlight=False,
    )
    if published.skipped:
        note(f"hidden files not uploaded: {shown(', '.join(published.skipped))} (--include-hidden publishes them)")
    if not (model_dir / "README.md").is_file():
        note(
            f"uploaded without a model card: `zoo card {escape(str(model_dir))}` writes README.md; upload again to "
            "publish it"
        )


@fails_cleanly
def pull(
    name: Annotated[str, typer.Argument(help="zoo:NAME\\[@REVISION], a name the registry lists, or a Hub repo id.")],
    revision: Annotated[
        str | None, typer.Option("--revision", help="Revision to fetch \\[default: the latest].")
    ] = None,
    registry: RegistryOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fetch a model by name into the local cache ($ZOO_HOME/cache), check every file's sha256, and
    print its path. A copy that fails a check is deleted; nothing unverified is left.

    Examples:
      [bold]zoo pull zoo:minilm-l6/rotten-tomatoes/4bit-2of4[/bold]
      [bold]python -c "import zoo; zoo.from_pretrained('$(zoo pull zoo:minilm-l6/rotten-tomatoes/4bit-2of4)')"[/bold]
    """
    from ..registry import pull as pull_model

    with quiet_hub(), err.status(f"pulling {name}"):
        path = pull_model(name, revision=revision, registry=registry, token=hf_token(token))
    out.print(str(path), highlight=False, soft_wrap=True)


@fails_cleanly
def list_(
    registry: RegistryOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """List the models a registry holds: name, revision, recipe, size, ratios and the measured result,
    read from the registry's index (recorded from each manifest at upload)."""
    from ..registry import list_models

    with quiet_hub():
        listing = list_models(registry=registry, token=hf_token(token))
    if as_json:
        out.print_json(json.dumps(listing.to_json()))
        return
    where, models = listing
    if not models:
        out.print(f"{where} holds no models yet (add one with `zoo upload DIR NAME`)", highlight=False)
        return
    table = Table(show_edge=False, header_style="bold", title=where, title_justify="left")
    table.add_column("name", overflow="fold", min_width=max(len(m.name) for m in models))  # never elide names
    table.add_column("revision", min_width=12, no_wrap=True)
    for col in ("recipe", "size", "ratio", "linear ratio", "result", "measured on"):
        table.add_column(
            col, justify="right" if col in ("size", "ratio", "linear ratio", "result") else "left", overflow="fold"
        )
    for m in models:
        res = m.result
        value = "-" if res is None else f"{res.value:.2%}" if res.metric == "accuracy" else f"{res.value:.4f}"
        table.add_row(
            shown(m.name),
            shown(m.revision[:12]),
            shown(m.recipe),
            mb(m.size_nbytes),
            f"{m.checkpoint_ratio:.2f}x",
            f"{m.encoder_linear_ratio:.2f}x",
            value,
            shown(f"{res.metric}, {res.dataset} {res.split}") if res else "-",
        )
    out.print(table)
