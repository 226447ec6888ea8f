"""Accuracy after compression on a real task: all-MiniLM-L6-v2 fine-tuned on rotten_tomatoes.

For each recipe: the post-training accuracy (compress, then evaluate) and the accuracy after
`zoo compress --task` (compression-aware fine-tuning with distillation), each measured by the CLI
in a fresh process on the test split and read back from the written manifest. Retention is
compressed / teacher test accuracy. Runs are kept under --work, so an interrupted benchmark
continues where it stopped (a finished recipe is not trained again).

    python -m bench.accuracy [--recipes int8,4bit] [--teacher DIR] [--work DIR] [--limit N]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, machine_header, write_report

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["int8", "4bit", "4bit-2of4", "kmeans-4bit", "ternary", "binary", "xtc-binary", "8bit-1of4", "search"]
TARGETS = {  # recipe -> (retention, whole-checkpoint ratio) the whole-checkpoint issue asks for
    "int8": (0.995, 3.9),
    "4bit": (0.995, 7.5),
    "kmeans-4bit": (0.995, 7.5),
    "4bit-2of4": (0.99, 10.0),
    "ternary": (0.97, 14.0),
    "binary": (0.97, 20.0),
    "xtc-binary": (0.95, 30.0),
    "search": (0.99, 12.0),  # --target-ratio 12 (the recipe's default), a 12x smaller checkpoint
}
# the search is compared with the uniform settings of its grid nearest its 12x: 8bit-1of4 is the least
# compressed one that reaches 12x, 4bit-2of4 the most compressed one that does not
UNIFORM = ["8bit-1of4", "4bit-2of4"]


def zoo(*args: str) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "zoo"), *map(str, args)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"zoo {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - start


def manifest(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())["quantization_config"]


def result(m: dict, role: str, split: str, metric: str = "accuracy") -> float | None:
    for r in m["evaluation"]:
        if (r["role"], r["split"], r["metric"]) == (role, split, metric):
            return r["value"]
    return None


def run_recipe(recipe: str, teacher: Path, work: Path, limit: list[str]) -> dict:
    trained = work / f"{recipe}-rt"
    seconds = None
    if not (trained / "config.json").is_file():
        _, seconds = zoo(
            "compress",
            teacher,
            "--recipe",
            recipe,
            "--task",
            "rotten_tomatoes",
            "--data",
            DATA,
            "--teacher",
            teacher,
            "--out",
            trained,
            "--overwrite",
            *limit,
        )
    m = manifest(trained)
    row = {
        "recipe": recipe,
        "teacher_test": result(m, "teacher", "test"),
        "test": result(m, "compressed", "test"),
        "validation": result(m, "compressed", "validation"),
        "teacher_validation": result(m, "teacher", "validation"),
        "agreement": result(m, "compressed", "test", "teacher_agreement"),
        "encoder_linear_ratio": m["sizes"]["encoder_linear_ratio"],
        "checkpoint_ratio": m["sizes"]["checkpoint_ratio"],
        "checkpoint_mb": m["sizes"]["checkpoint_nbytes"] / 1e6,
        "train_seconds": m["training"]["seconds"] if seconds is None else seconds,
        "epochs": m["training"]["epochs"],
        "n_test": next(r["n_examples"] for r in m["evaluation"] if r["split"] == "test"),
    }
    row["retention"] = row["test"] / row["teacher_test"]
    if not m["training"].get("keep_layers") and not m.get("structure"):  # layer reduction, pruning need training
        post = work / f"{recipe}-post"
        if not (post / "config.json").is_file():
            zoo("compress", teacher, "--recipe", recipe, "--out", post, "--overwrite")
        out, _ = zoo("eval", post, "--task", "rotten_tomatoes", "--data", DATA, "--max-length", "64", "--json", *limit)
        row["post_training_test"] = json.loads(out)["metrics"]["accuracy"]
    return row


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| recipe | whole ratio (target) | checkpoint MB | teacher test acc | post-training acc | fine-tuned acc "
            "| retention (target) | agreement | val acc | encoder-linear ratio | train time |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        keep, ratio = TARGETS.get(r["recipe"], (None, None))
        met = "" if keep is None else (" ✓" if r["retention"] >= keep else " **miss**")
        target = "" if keep is None else f" ({keep:.1%}){met}"
        ratio_met = "" if ratio is None else (" ✓" if r["checkpoint_ratio"] >= ratio else " **miss**")
        target_ratio = "" if ratio is None else f" ({ratio:g}x){ratio_met}"
        post = f"{r['post_training_test']:.2%}" if r.get("post_training_test") is not None else "n/a"
        lines.append(
            f"| {r['recipe']} | {r['checkpoint_ratio']:.2f}x{target_ratio} | {r['checkpoint_mb']:.2f} | "
            f"{r['teacher_test']:.2%} | {post} | {r['test']:.2%} | {r['retention']:.2%}{target} | "
            f"{r['agreement']:.2%} | "
            f"{r['validation']:.2%} | {r['encoder_linear_ratio']:.2f}x | {r['train_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def search_versus_uniform(rows: list[dict]) -> str:
    """One line per uniform recipe measured beside the search: test sentences right, agreement, ratio."""
    by = {r["recipe"]: r for r in rows}
    search = by.get("search")
    if search is None:
        return ""
    head = (
        "Search against the uniform settings of its grid nearest its ratio (test sentences right of "
        f"{search['n_test']}; one run each, so a few sentences either way are noise):"
    )
    lines = [head, ""]
    for name in UNIFORM:
        if name in by:
            u = by[name]
            diff = round((search["test"] - u["test"]) * search["n_test"])
            verdict = "better" if diff > 0 else "worse" if diff < 0 else "a tie"
            lines.append(
                f"- search {search['checkpoint_ratio']:.2f}x: {round(search['test'] * search['n_test'])} "
                f"(agreement {search['agreement']:.2%}) vs uniform {name} {u['checkpoint_ratio']:.2f}x: "
                f"{round(u['test'] * u['n_test'])} (agreement {u['agreement']:.2%}): {verdict} ({diff:+d})"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def ensure_teacher(work: Path, limit: int | None) -> Path:
    """WORK/teacher: all-MiniLM-L6-v2 fine-tuned on rotten_tomatoes (made here once, then reused)."""
    teacher = work / "teacher"
    if not (teacher / "config.json").is_file():
        print(f"[accuracy] fine-tuning the teacher into {teacher} ...", file=sys.stderr, flush=True)
        work.mkdir(parents=True, exist_ok=True)
        zoo(
            "finetune",
            "minilm",
            "--task",
            "rotten_tomatoes",
            "--data",
            DATA,
            "--out",
            teacher,
            "--epochs",
            "2",
            "--overwrite",
            *(["--limit", str(limit)] if limit else []),
        )
    return teacher


def main(out: Path, recipes: list[str], teacher: Path | None, work: Path, limit: int | None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    limit_args = ["--limit", str(limit)] if limit else []
    if teacher is None:
        teacher = ensure_teacher(work, limit)
    rows = []
    for recipe in recipes:
        print(f"[accuracy] {recipe} ...", file=sys.stderr, flush=True)
        rows.append(run_recipe(recipe, teacher, work, limit_args))
    note = (
        f"Teacher: all-MiniLM-L6-v2 fine-tuned by `zoo finetune` (2 epochs, batch 32, lr 5e-5, max_length 64), "
        f"at {teacher}. Test split: {rows[0]['n_test']} sentences; one sentence is "
        f"{1 / rows[0]['n_test']:.3%}, and the 95% interval of an accuracy is about ±2 points. Each row is one "
        "`zoo compress --task` run with the recipe's own training section (epochs shown in the JSON); "
        "'post-training' is `zoo compress` without --task (GPTQ-rounded on the built-in sample sentences where the "
        "recipe says so), evaluated the same way. Ratios: the whole checkpoint's weight files against the teacher's "
        "(the target), and the blocks' linear weights against fp32."
    )
    markdown = f"{machine_header('Accuracy on rotten_tomatoes (test split)')}\n\n{note}\n\n{table(rows)}\n"
    versus = search_versus_uniform(rows)
    if versus:
        markdown += f"\n{versus}\n"
    write_report(out, "accuracy", markdown, {"teacher": str(teacher), "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.accuracy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--teacher", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("bench/work/accuracy"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--limit", type=int, default=None, help="examples per split (a quick check, not the table)")
    args = parser.parse_args()
    main(args.out, args.recipes.split(","), args.teacher, args.work, args.limit)
