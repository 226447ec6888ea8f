"""Commands on one zoo checkpoint: `zoo pack`, `zoo unpack`, `zoo info`, `zoo verify`, `zoo card`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ZooError
from .common import (
    OverwriteOpt,
    RecipeOpt,
    ShardOpt,
    dir_or_pull,
    fails_cleanly,
    mb,
    note,
    out,
    parse_size,
    print_made,
    quiet_hub,
    shown,
)
from .model import run_compact

NameOpt = Annotated[str, typer.Argument(help="A zoo checkpoint directory, or a registry name (zoo:NAME\\[@REV]).")]
PullFromOpt = Annotated[
    str | None,
    typer.Option(
        "--registry", help="Registry to pull NAME from \\[default: $ZOO_REGISTRY, else local].", show_default=False
    ),
]


@fails_cleanly
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
    run_compact(model_dir, recipe, out_dir, None, overwrite, max_shard_size, pack=True)


@fails_cleanly
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
    path = unpack_checkpoint(model_dir, target, overwrite=overwrite, max_shard_bytes=parse_size(max_shard_size))
    out.print(f"Unpacked {model_dir} -> {path}")


@fails_cleanly
def info(
    model: NameOpt,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the facts (results, layers, manifest) as JSON.")
    ] = False,
    registry: PullFromOpt = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Revision of NAME \\[default: the latest].")
    ] = None,
) -> None:
    """Show what a zoo checkpoint holds: recipe, base model, results against the teacher, sizes and
    every compressed module (the facts its model card shows). The checkpoint is fully verified
    (manifest, tensors, sha256) first; a NAME is pulled (verified) into the cache first.

    Examples:
      [bold]zoo info minilm-4bit-2of4[/bold]
      [bold]zoo info zoo:minilm-l6/rotten-tomatoes/4bit-2of4 --json[/bold]
    """
    from zoo.cards import checkpoint_facts

    facts = checkpoint_facts(dir_or_pull(model, registry, revision))
    if as_json:
        out.print_json(json.dumps(facts.to_json()))
        return
    _print_facts(facts)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _print_facts(facts) -> None:
    m, res = facts.manifest, facts.results
    s = m.sizes
    out.print(f"[bold]{shown(facts.path)}[/bold]  zoo format {m.format_version}, written by zoo {shown(m.zoo_version)}")
    out.print(
        f"  base model      {shown(m.base_model.id)} ({m.base_model.source}, revision {shown(m.base_model.revision)})"
    )
    out.print(f"  recipe          {shown(m.recipe.name)}: {shown(facts.description)}")
    out.print(f"  checkpoint      {mb(s.checkpoint_nbytes)} ({s.checkpoint_ratio:.2f}x smaller than the source)")
    out.print(f"  encoder linear  {mb(s.encoder_linear_nbytes)} ({s.encoder_linear_ratio:.2f}x vs fp32)")
    print_made(facts.loads_as, facts.rounding, m.fidelity)
    if m.training is not None:
        t = m.training
        kept = f", layers {t.keep_layers} of the teacher" if t.keep_layers else ""
        out.print(
            f"  trained         on {shown(t.dataset)}: {t.epochs:g} epochs, {t.steps} steps, "
            f"{t.seconds / 60:.1f} min on {shown(t.device)}"
            + (f" x {t.world_size} processes ({shown(t.backend)})" if t.world_size and t.world_size > 1 else "")
            + (f", {t.global_batch_size} examples per step" if t.global_batch_size else "")
            + f", distilled from {shown(t.teacher)}{kept}"
            + (f", {t.max_length} tokens per example" if t.max_length else "")
        )
        if t.labels:
            out.print(f"  labels          {shown(', '.join(t.labels))}")
    if m.evaluation:
        for r in m.evaluation:
            out.print(
                f"  {r.role:15s} {shown(r.metric)} {r.value:.4f} on {shown(r.dataset)} {shown(r.split)} "
                f"({r.n_examples} examples)"
            )
    else:
        out.print("  evaluation      none recorded (compressed without --task; measure with `zoo eval DIR --task ...`)")

    title = f"results on {res.dataset} {res.split} ({res.n_examples} examples)" if res.measured else "sizes"
    summary = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    summary.add_column("model", overflow="fold")
    for col in ("accuracy", "retention", "size", "ratio", "enc-linear ratio"):
        summary.add_column(col, justify="right", no_wrap=True)
    for r in res.rows:
        summary.add_row(
            shown(r.model),
            _pct(r.value),
            _pct(r.retention),
            mb(r.size_bytes),
            f"{r.checkpoint_ratio:.2f}x",
            f"{r.encoder_linear_ratio:.2f}x",
        )
    out.print(summary)
    if res.agreement is not None:
        out.print(f"  agreement with the teacher: {_pct(res.agreement)}")

    if m.structure is not None:
        st = m.structure
        out.print(
            f"  pruned          heads per layer {st.attention_heads} (of {st.heads_before}), FFN widths "
            f"{st.intermediate_sizes} (of {st.intermediate_size_before}); plain dense layers"
        )
    if facts.layers:
        table = Table(title="compressed modules", title_justify="left", show_edge=False, header_style="bold")
        # module names are what people grep for: never elide them, fold them if the terminal is narrow
        table.add_column("module", overflow="fold", min_width=max(len(r.module) for r in facts.layers))
        for col in ("codec", "bits", "sparsity", "bytes", "ratio"):
            table.add_column(col, justify="left" if col == "codec" else "right", no_wrap=True)
        for r in facts.layers:
            tied = f" (shared with {', '.join(r.tied)})" if r.tied else ""
            table.add_row(
                shown(r.module + tied),
                shown(r.method),
                f"{r.bits:.3g}",
                f"{100 * r.sparsity:.0f}%",
                f"{r.nbytes:,}",
                f"{r.ratio:.2f}x",
            )
        out.print(table)
    out.print(
        f"  other tensors (norms, biases, heads, any layer no rule took, file headers): "
        f"{mb(facts.other_tensors_nbytes)}"
    )


@fails_cleanly
def verify(
    model: NameOpt,
    registry: PullFromOpt = None,
) -> None:
    """Check every byte of a zoo checkpoint: the sha256 of every file against the manifest, every safetensors
    header, and every module's tensors against its codec. A pull does this as files arrive; a plain load
    checks only what is cheap (sizes, headers, config.json's settings), so run this on a copy you did not pull.

    Example: [bold]zoo verify minilm-4bit-2of4[/bold]
    """
    from zoo.formats import Checkpoint

    model_dir = dir_or_pull(model, registry, None)
    ckpt = Checkpoint.open(model_dir, verify=True)
    files = ckpt.manifest.files
    if not files:
        raise ZooError(
            f"{model_dir} records no file hashes (re-saved by transformers' save_pretrained?): its "
            "structure is sound, but nothing can be checked byte for byte",
            hint="compress or pull it again",
        )
    out.print(
        f"Verified {shown(model_dir)}: {len(files)} files ({mb(sum(f.nbytes for f in files.values()))}) match "
        f"their sha256, {len(ckpt.manifest.modules)} modules fit their codecs",
        highlight=False,
    )


@fails_cleanly
def card(
    model_dir: Annotated[Path, typer.Argument(help="A zoo checkpoint directory.")],
    name: Annotated[
        str | None,
        typer.Option("--name", help="The repo id or stub people load it by \\[default: the directory's name]."),
    ] = None,
    sibling: Annotated[
        list[Path] | None,
        typer.Option("--sibling", help="Another zoo checkpoint to plot beside this one (repeatable)."),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry", help="Also plot the models this registry lists (local, hf, a path...).", show_default=False
        ),
    ] = None,
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Draw the accuracy-vs-size plot (needs matplotlib).")
    ] = True,
) -> None:
    """(Re)generate the model card: README.md with Hub metadata (model-index), results against the teacher,
    how to load it, the recipe, a per-layer table, and a PNG plot of accuracy against size.
    Every number is read from the manifest. `zoo compress` writes one already; run this after new
    evaluations, or to plot sibling models.

    Examples:
      [bold]zoo card minilm-4bit-2of4-rt --sibling minilm-int8-rt --sibling minilm-binary-rt[/bold]
      [bold]zoo card minilm-4bit-2of4-rt --registry local[/bold]   (plot the models the local registry lists)
    """
    from zoo.cards import results, write_card
    from zoo.formats import Checkpoint

    from ..siblings import registry_points, sibling_points

    own = results(Checkpoint.open(model_dir).manifest)  # a card describes a verified checkpoint
    siblings = sibling_points(own, sibling or [])
    for left_out in siblings.not_plotted:
        if left_out.measured_on is None:
            note(f"{escape(str(left_out.path))} has no recorded accuracy; not plotted")
        else:
            dataset, split = left_out.measured_on
            note(
                f"{escape(str(left_out.path))} was measured on {dataset} {split}, not {own.dataset} {own.split}; "
                "not plotted"
            )
    points = list(siblings.points)
    if registry is not None:
        with quiet_hub():
            points += registry_points(own, registry=registry, exclude=name)
    files = write_card(model_dir, name=name, siblings=points, draw_plot=plot)
    written = [files.readme, files.plot, files.eval_results]
    out.print(f"Wrote the card of {model_dir}: " + ", ".join(str(p.relative_to(model_dir)) for p in written if p))
    if files.plot is not None:
        out.print(
            f"  plotted beside its teacher and {len(points)} other model(s)"
            + (f": {', '.join(p.label for p in points)}" if points else "")
        )
    if files.plot is None and plot:
        out.print(
            "[dim]no plot: "
            + (
                "matplotlib is not installed (pip install 'zoo-compress[cards]')"
                if files.has_results
                else "no accuracy is recorded"
            )
            + "[/dim]"
        )
