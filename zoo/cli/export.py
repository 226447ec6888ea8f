"""`zoo export`: a zoo checkpoint for another runtime (ONNX Runtime)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import OverwriteOpt, err, fails_cleanly, mb, note, out


@fails_cleanly
def export(
    model_dir: Annotated[Path, typer.Argument(help="A zoo checkpoint directory.")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write an ONNX Runtime model (the only format so far; required).")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory \\[default: ./DIR-onnx].")
    ] = None,
    kernel: Annotated[
        str,
        typer.Option(
            "--kernel",
            help="How linear layers compute. int8: int8 x int8 (DynamicQuantizeMatMul) on one int8 "
            "grid per row that ONNX Runtime makes from the stored codes when the session starts, activations "
            "quantized per tensor: the fastest on x86 for batches, approximate like zoo's kernel mode. "
            "nbits: MatMulNBits on the stored 2/4/8-bit codes, int8 activations per block. "
            "exact: MatMulNBits with float activations: the outputs of materialize mode.",
        ),
    ] = "int8",
    task: Annotated[
        str | None,
        typer.Option(
            "--task", help="Load as this task's model (text-classification...) \\[default: the checkpoint's class]."
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Run the written model with onnxruntime against zoo's materialize mode before keeping it.",
        ),
    ] = True,
) -> None:
    """Export a zoo checkpoint to a folder ONNX Runtime runs without zoo: model.onnx carries the stored codes
    (2-, 4- and 8-bit, with their scales; embeddings through a quantized gather), beside config.json and the
    tokenizer, so optimum's ORTModel classes load it. Codecs with no such layout (k-means, Kronecker) are
    refused. Needs `pip install 'zoo-compress\\[onnx]'`.

    Examples:
      [bold]zoo export minilm-4bit-2of4 --onnx[/bold]
      [bold]zoo export minilm-4bit --onnx --kernel exact --out minilm-4bit-onnx-exact[/bold]
    """
    from zoo.errors import ExportError

    if not onnx:
        raise ExportError("choose a format to export to", hint="pass --onnx (ONNX Runtime; the only format so far)")
    from zoo.export import KERNELS, export_onnx

    if kernel not in KERNELS:
        raise ExportError(f"unknown --kernel {kernel!r}", hint=f"choose one of {', '.join(KERNELS)}")
    target = out_dir or Path(f"{model_dir.resolve().name}-onnx")
    with err.status(f"exporting {model_dir} to ONNX (torch's exporter takes a minute on a BERT-base)"):
        result = export_onnx(model_dir, target, kernel=kernel, task=task, overwrite=overwrite, check=check)
    out.print(
        f"Exported {escape(str(model_dir))} -> {escape(str(result.path))}: model.onnx {mb(result.onnx_nbytes)} "
        f"(the checkpoint's weights: {mb(result.checkpoint_nbytes)}), outputs {', '.join(result.outputs)}"
    )
    for what, count in sorted(Counter(result.ops.values()).items()):
        out.print(f"  {count} module{'s' if count > 1 else ''}: {escape(what)}")
    if result.unused:
        note(f"not in the graph (its outputs do not use them): {', '.join(result.unused)}")
    if result.checked is None:
        note(
            "not checked: onnxruntime is not installed"
            if check
            else "not checked (--no-check): run it with onnxruntime before you ship it"
        )
    else:
        out.print(
            f"Checked with onnxruntime against zoo's materialize mode: cosine {result.checked['cosine']:.4f}, "
            f"largest difference {result.checked['max_rel_diff']:.1e} of the largest output"
        )
