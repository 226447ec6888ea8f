"""Post-training compression time and peak RSS of this checkout against another checkout of zoo (an earlier
commit), measured side by side in one run.

    git worktree add /tmp/zoo-before <commit>
    python -m bench.versus --baseline /tmp/zoo-before [--models bert-base,minilm] [--recipes int8,4bit] [--repeat 2]

Each measurement is one fresh process (`python -m bench.compress --child`, which both checkouts have) run from
the checkout's own directory, so time includes imports, planning, GPTQ where the recipe asks for it, and writing.
The two checkouts alternate (before, after, after, before, ...) so that load on the machine falls on both alike;
the table gives the median of --repeat runs each and the ratio after / before. Models: the packaged
all-MiniLM-L6-v2 and bench.scale's BERT-base-sized random BERT (MiniLM's tokenizer beside it, so GPTQ runs).
A recipe only one checkout has is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import machine_header, write_report
from bench.compress import RECIPES
from bench.scale import CONFIGS, random_bert_with_tokenizer

HERE = Path(__file__).resolve().parents[1]


def _git(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()[:72] or str(tree)


def _builtin(tree: Path) -> set[str]:
    return {p.stem for p in (tree / "zoo" / "recipes" / "builtin").glob("*.yaml")}


def _run(tree: Path, model: str, recipe: str, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "bench.compress", "--child", model, recipe, str(out), str(2 * 10**9)]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: compressing {model} with {recipe} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(baseline: Path, recipes: list[str], repeat: int, out_dir: Path, wanted: list[str]) -> dict:
    missing = [r for r in recipes if r not in _builtin(baseline) or r not in _builtin(HERE)]
    recipes = [r for r in recipes if r not in missing]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hidden, layers = CONFIGS[-1]
        models = {}
        if "bert-base" in wanted:
            models[f"random BERT {hidden}x{layers}"] = str(random_bert_with_tokenizer(tmp, hidden, layers))
        if "minilm" in wanted:
            models["all-MiniLM-L6-v2"] = "minilm"
        for label, model in models.items():
            for recipe in recipes:
                runs: dict[str, list[dict]] = {"before": [], "after": []}
                for i in range(repeat):
                    order = [("before", baseline), ("after", HERE)]
                    for which, tree in order if i % 2 == 0 else order[::-1]:
                        runs[which].append(_run(tree, model, recipe, tmp / f"{which}-{recipe}"))
                        shutil.rmtree(tmp / f"{which}-{recipe}")
                row = {"model": label, "recipe": recipe}
                for which, got in runs.items():
                    row[f"{which}_s"] = statistics.median(r["seconds"] for r in got)
                    row[f"{which}_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in got)
                    row[f"{which}_mb"] = got[0]["checkpoint_nbytes"] / 1e6
                rows.append(row)
                print(row, flush=True)
    md = [
        machine_header("Compression time and memory: this checkout against an earlier one"),
        "",
        f"Before: `{_git(baseline)}`. After: `{_git(HERE)}`. Median of {repeat} fresh processes each, alternating.",
        *([f"Left out (a recipe only one checkout has): {', '.join(missing)}."] if missing else []),
        "",
        (
            "| model | recipe | before s | after s | time after/before | before RSS MB | after RSS MB "
            "| RSS after/before | before MB | after MB |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['recipe']} | {r['before_s']:.1f} | {r['after_s']:.1f} | "
            f"{r['after_s'] / r['before_s']:.2f} | {r['before_rss_mb']:.0f} | {r['after_rss_mb']:.0f} | "
            f"{r['after_rss_mb'] / r['before_rss_mb']:.2f} | {r['before_mb']:.1f} | {r['after_mb']:.1f} |"
        )
    data = {"before": _git(baseline), "after": _git(HERE), "repeat": repeat, "rows": rows}
    write_report(out_dir, "versus", "\n".join(md) + "\n", data)
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.versus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of zoo (a git worktree)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="[default: bench.compress's recipes]")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--models",
        default="bert-base,minilm",
        help="bert-base (bench.scale's random BERT-base-sized model), minilm, or both",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if not (args.baseline / "bench" / "compress.py").is_file():
        parser.error(f"{args.baseline} is not a checkout of zoo (no bench/compress.py)")
    models = args.models.split(",")
    if not models or set(models) - {"bert-base", "minilm"}:
        parser.error(f"--models takes bert-base and/or minilm, not {args.models!r}")
    main(args.baseline.resolve(), args.recipes.split(","), args.repeat, args.out, models)
