"""Kernel mode's speed: dense fp32 against materialize, kernel, and kernel mode's options, interleaved.

    python -m bench.kernel [--quick] [--out DIR] [--runs 12]

For each model (all-MiniLM-L6-v2 compressed with int8 and with 4bit, and a random BERT-base-sized model
compressed with int8; --quick: MiniLM int8 only) every variant is loaded into one process and timed in turn,
the order alternating run by run (A B C, C B A, ...), after warm-up, at batch 32 x 64 and 1 x 128 tokens: on a
shared 2-core VM latencies drift by 10-30% between processes and minutes, the ratio of interleaved medians
much less. Variants:

  dense fp32            transformers' model, eager (the baseline of every ratio)
  materialize           zoo's default mode
  kernel                int8 x int8 matmuls, activations quantized per token (loaders/kernels.py)
  kernel, compile       the same, `compile=True` (torch.compile, inductor); its first call per shape is the
                        compile time, reported apart
  kernel, bf16          the same loaded with dtype=torch.bfloat16 (layer norms, attention, GELU in bf16; only
                        where the CPU has bf16 instructions)
  dense fp32, compile   the dense model compiled too: how much of compile's gain is not kernel mode's

Torch runs 2 threads. Nothing is written unless --out names a directory (DIR/kernel.md and kernel.json).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine_header, write_report

SHAPES = {"32x64": (32, 64), "1x128": (1, 128)}


def bf16_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), checked at run time."""
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return torch.cpu._is_avx512_bf16_supported() or "amx_bf16" in flags


def variants(path: Path, dense_path: Path) -> dict:
    """label -> model in eval mode, every variant of one checkpoint (load times are bench.load's business)."""
    import torch
    from transformers import AutoModel

    import zoo

    out = {
        "dense fp32": AutoModel.from_pretrained(dense_path),
        "materialize": zoo.from_pretrained(path),
        "kernel": zoo.from_pretrained(path, mode="kernel"),
        "kernel, compile": zoo.from_pretrained(path, mode="kernel", compile=True),
    }
    if bf16_supported():
        out["kernel, bf16"] = zoo.from_pretrained(path, mode="kernel", dtype=torch.bfloat16)
    dense_compiled = AutoModel.from_pretrained(dense_path)
    dense_compiled.compile()
    out["dense fp32, compile"] = dense_compiled
    return {label: model.eval() for label, model in out.items()}


def time_interleaved(models: dict, ids, runs: int) -> tuple[dict, dict]:
    """(label -> median ms, label -> first-call seconds) for `models` timed in turn on `ids`."""
    import torch

    mask = torch.ones_like(ids)
    first: dict[str, float] = {}
    times: dict[str, list[float]] = {label: [] for label in models}
    labels = list(models)
    with torch.inference_mode():
        for label, model in models.items():
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)  # a compiled model compiles for this shape here
            first[label] = time.perf_counter() - start
            for _ in range(2):
                model(input_ids=ids, attention_mask=mask)
        for run in range(runs):
            for label in labels if run % 2 == 0 else labels[::-1]:
                start = time.perf_counter()
                models[label](input_ids=ids, attention_mask=mask)
                times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) * 1000 for label, t in times.items()}, first


def measure(name: str, path: Path, dense_path: Path, runs: int) -> list[dict]:
    import torch

    models = variants(path, dense_path)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for shape_name, shape in SHAPES.items():
        ids = torch.randint(1000, 29000, shape, generator=generator)
        ms, first = time_interleaved(models, ids, runs if shape[0] > 1 else runs * 4)
        for label in models:
            rows.append(
                {
                    "model": name,
                    "variant": label,
                    "shape": shape_name,
                    "ms": ms[label],
                    "vs_dense": ms["dense fp32"] / ms[label],
                    "first_call_s": first[label],
                }
            )
            print(f"{name} {shape_name} {label}: {ms[label]:.1f} ms, {rows[-1]['vs_dense']:.2f}x", flush=True)
    return rows


def checkpoints(tmp: Path, quick: bool) -> list[tuple[str, Path, Path]]:
    """(name, zoo checkpoint, dense source) for each model measured."""
    from bench.scale import CONFIGS, random_bert_with_tokenizer
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    minilm = resolve_model("minilm")
    out = [("MiniLM int8", write_compact(minilm, load_recipe("int8"), tmp / "minilm-int8").path, minilm.path)]
    if not quick:
        out.append(("MiniLM 4bit", write_compact(minilm, load_recipe("4bit"), tmp / "minilm-4bit").path, minilm.path))
        hidden, layers = CONFIGS[-1]
        base = random_bert_with_tokenizer(tmp, hidden, layers)
        compressed = write_compact(resolve_model(str(base)), load_recipe("int8"), tmp / "base-int8").path
        out.append((f"BERT-base-sized random ({hidden}x{layers}) int8", compressed, base))
    return out


def main(out_dir: Path | None = None, quick: bool = False, runs: int = 12) -> list[dict]:
    import torch

    torch.set_num_threads(2)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, dense_path in checkpoints(Path(tmp), quick):
            rows += measure(name, path, dense_path, runs)
    md = [
        machine_header("Kernel mode against dense fp32 (interleaved)"),
        "",
        f"Median of {runs} forward passes at 32 x 64 and {runs * 4} at 1 x 128 (random token ids), every variant of",
        "a model timed in turn in one process, the order alternating; speed is dense fp32's median over the",
        "variant's. First call: the first forward at that shape (a compiled variant compiles there).",
        "",
        "| model | variant | 32x64 ms | 32x64 vs dense | 1x128 ms | 1x128 vs dense | first call 32x64, 1x128 (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    by = {(r["model"], r["variant"], r["shape"]): r for r in rows}
    for model, variant in dict.fromkeys((r["model"], r["variant"]) for r in rows):
        a, b = by[(model, variant, "32x64")], by[(model, variant, "1x128")]
        md.append(
            f"| {model} | {variant} | {a['ms']:.1f} | {a['vs_dense']:.2f}x | {b['ms']:.2f} | {b['vs_dense']:.2f}x "
            f"| {a['first_call_s']:.1f}, {b['first_call_s']:.1f} |"
        )
    text = "\n".join(md) + "\n"
    if out_dir is not None:
        write_report(out_dir, "kernel", text, {"runs": runs, "rows": rows})
    else:
        print(text)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.kernel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="MiniLM int8 only")
    parser.add_argument("--out", type=Path, default=None, help="write DIR/kernel.md and .json [default: print only]")
    parser.add_argument("--runs", type=int, default=12, help="timed passes at 32 x 64 (4x as many at 1 x 128)")
    args = parser.parse_args()
    main(args.out, args.quick, args.runs)
