"""How compression and loading grow with model size: random-weight BERTs from ~4M to ~110M parameters, and
every built-in codec recipe on the BERT-base-sized one.

    python -m bench.scale [--quick] [--out bench/results] [--repeat 3]

Random weights are fine for time, memory and size (never for accuracy). For each config: `zoo compress --recipe
4bit` in a fresh process (time, peak RSS), then `from_pretrained` of the dense and the compressed checkpoint
(materialize and packed modes), each the median of --repeat fresh processes (bench.load's child). Then each
recipe compresses the largest config (with MiniLM's tokenizer beside it, so recipes that round with GPTQ do),
and 4bit once more rounding to nearest, the streaming path with nothing loaded but the tensor at hand.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import compress, load
from bench.common import machine_header, with_minilm_tokenizer, write_report

# (hidden, layers): 4.4M, 11M, 23M, 41M and 110M parameters with BERT's 30522-token vocabulary
CONFIGS = [(128, 2), (256, 4), (384, 6), (512, 8), (768, 12)]
RECIPE = "4bit"
RECIPES = ["int8", "4bit", "2of4", "4bit-2of4", "8bit-1of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"]


def _load_s(path: Path, mode: str, repeat: int) -> float:
    runs = [load.measure(path, mode, latency=False) for _ in range(repeat)]
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        raise SystemExit(f"loading {path} ({mode}) failed: {errors[0]}")
    return statistics.median(r["load_s"] for r in runs)


def random_bert_with_tokenizer(tmp: Path, hidden: int, layers: int) -> Path:
    """A random BERT with MiniLM's tokenizer beside it (the vocabularies match), made once under `tmp`."""
    src = tmp / f"bert-{hidden}x{layers}-tok"
    if not src.exists():
        compress.random_bert(src, hidden, layers)
        with_minilm_tokenizer(src)
    return src


def _recipes(tmp: Path, hidden: int, layers: int, recipes: list[str]) -> list[dict]:
    """Each recipe on one random BERT that has MiniLM's tokenizer (the vocabularies match), and 4bit rounded to
    nearest (its recipe without the gptq section)."""
    import shutil

    from zoo.recipes import builtin_text

    src = random_bert_with_tokenizer(tmp, hidden, layers)
    nearest = tmp / "4bit-nearest.yaml"
    nearest.write_text(builtin_text("4bit").replace("name: 4bit", "name: 4bit-nearest").replace("gptq:", "# gptq:"))
    rows = []
    for recipe in [*recipes, str(nearest)]:
        out = tmp / f"{src.name}-{Path(recipe).stem}"
        c = compress.measure(str(src), recipe, out)
        rows.append(
            {
                "recipe": Path(recipe).stem,
                "rounding": compress.rounding(out),
                "source_mb": c["source_nbytes"] / 1e6,
                "checkpoint_mb": c["checkpoint_nbytes"] / 1e6,
                "checkpoint_ratio": c["checkpoint_ratio"],
                "encoder_linear_ratio": c["encoder_linear_ratio"],
                "compress_s": c["seconds"],
                "compress_rss_mb": c["peak_rss_mb"],
            }
        )
        print(rows[-1], flush=True)
        shutil.rmtree(out)
    return rows


def main(out_dir: Path, quick: bool, repeat: int) -> dict:
    import torch  # noqa: F401 - imported before timing anything in this process

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for hidden, layers in CONFIGS[:2] if quick else CONFIGS:
            src = tmp / f"bert-{hidden}x{layers}"
            source_bytes, _ = compress.random_bert(src, hidden, layers)
            out = tmp / f"{src.name}-{RECIPE}"
            c = compress.measure(str(src), RECIPE, out)
            row = {
                "hidden": hidden,
                "layers": layers,
                "params_m": source_bytes / 4e6,
                "source_mb": source_bytes / 1e6,
                "checkpoint_mb": c["checkpoint_nbytes"] / 1e6,
                "compress_s": c["seconds"],
                "compress_rss_mb": c["peak_rss_mb"],
                "load_dense_s": _load_s(src, "dense", repeat),
                "load_materialize_s": _load_s(out, "materialize", repeat),
                "load_packed_s": _load_s(out, "packed", repeat),
            }
            rows.append(row)
            print(row, flush=True)
        by_recipe = _recipes(tmp, *(CONFIGS[1] if quick else CONFIGS[-1]), RECIPES[:2] if quick else RECIPES)
    md = [
        machine_header("Scale: compression and load time against model size (random-weight BERTs)"),
        "",
        (
            f"Recipe {RECIPE}; every time is a fresh process (compression: one run, including imports; loads: "
            f"median of {repeat}, `from_pretrained` only)."
        ),
        "",
        (
            "| config | params | fp32 MB | zoo MB | compress s | compress peak RSS MB | load dense s "
            "| load materialize s | load packed s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| hidden {r['hidden']}, {r['layers']} layers | {r['params_m']:.1f}M | {r['source_mb']:.0f} | "
            f"{r['checkpoint_mb']:.1f} | {r['compress_s']:.1f} | {r['compress_rss_mb']:.0f} | "
            f"{r['load_dense_s']:.2f} | {r['load_materialize_s']:.2f} | {r['load_packed_s']:.2f} |"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        grow = last["params_m"] / first["params_m"]
        md += [
            "",
            (
                f"From {first['params_m']:.0f}M to {last['params_m']:.0f}M parameters ({grow:.0f}x): compression time "
                f"x{last['compress_s'] / first['compress_s']:.1f}, "
                f"dense load x{last['load_dense_s'] / first['load_dense_s']:.1f}, "
                f"materialize load x{last['load_materialize_s'] / first['load_materialize_s']:.1f}."
            ),
        ]
    hidden, layers = CONFIGS[1] if quick else CONFIGS[-1]
    md += [
        "",
        (
            f"Every recipe on the hidden {hidden}, {layers}-layer BERT ({by_recipe[0]['source_mb']:.0f} MB fp32), "
            "one fresh process each; 'rounding' says whether GPTQ ran (on the built-in sample sentences, with "
            "MiniLM's tokenizer) or the weights were rounded to nearest."
        ),
        "",
        "| recipe | rounding | zoo MB | whole ratio | encoder-linear ratio | compress s | compress peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in by_recipe:
        md.append(
            f"| {r['recipe']} | {r['rounding']} | {r['checkpoint_mb']:.1f} | {r['checkpoint_ratio']:.2f}x | "
            f"{r['encoder_linear_ratio']:.2f}x | {r['compress_s']:.1f} | {r['compress_rss_mb']:.0f} |"
        )
    data = {"recipe": RECIPE, "repeat": repeat, "rows": rows, "recipes": by_recipe}
    write_report(out_dir, "scale", "\n".join(md) + "\n", data)
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the two smallest configs, 2 load runs")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    main(args.out, args.quick, 2 if args.quick else args.repeat)
