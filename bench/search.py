"""The ratio-budget search's cost, and what its block measure chooses against the end-to-end one.

    python -m bench.search [--out bench/results] [--teacher DIR]

1. A random BERT-base-sized model (bench.scale's, MiniLM's tokenizer beside it): a post-training `4bit` compress
   (GPTQ) and the `search` recipe with each measure (`block`, the default, and `model`, every (module, setting)
   pair end to end), each compress in a fresh process (bench.compress's child: time and peak RSS), in this one
   run: the search's time over the 4bit compress's (issue 22's goal: at most 10x).
2. all-MiniLM-L6-v2: zoo.search.measure with each measure in this process, on the built-in recipe's calibration
   (its 64 built-in sentences, as a post-training search measures) and, with --teacher (MiniLM fine-tuned on
   rotten_tomatoes, e.g. `zoo finetune minilm --task rotten_tomatoes --data tests/data/rotten_tomatoes --epochs 1`),
   on 64 rotten_tomatoes training examples as `--task` measures: the time of each, and the modules whose setting
   the knapsack (at the recipe's default 12x) picks the same from both measures' loss increases."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import compress
from bench.common import DATA, machine_header, write_report
from bench.scale import random_bert_with_tokenizer

OTHER_TARGETS = (8, 10, 14, 16)


def _model_measure_recipe(tmp: Path) -> Path:
    from zoo.recipes import builtin_text

    text = builtin_text("search")
    changed = text.replace("name: search", "name: search-model").replace("measure: block}", "measure: model}")
    assert changed.count("measure: model") == 1, "the built-in search recipe's search section changed"
    path = tmp / "search-model.yaml"
    path.write_text(changed)
    return path


def compare_measures(model, model_dir: Path, batches: list[dict]) -> dict:
    """Both measures on `model` (the dense reference) over `batches`, and the knapsack's choices from each."""
    from zoo.formats import codecs

    from zoo import search
    from zoo.errors import RecipeError
    from zoo.recipes import load_recipe

    recipe = load_recipe("search")
    loss, head = search.fidelity_loss(model, batches)
    targets, cands = search.searched_modules(model, recipe), search.candidates(recipe.search)
    budget = search.search_budget(model, model_dir, targets, recipe)
    costs = np.array([[codecs.nbytes(t.shape, c) for c in cands] for t in targets], dtype=np.float64)
    out: dict = {"modules": len(targets), "candidates": len(cands), "loss": "KL" if head else "1 - cosine"}
    increases, picks = {}, {}
    for how in search.MEASURES:
        start = time.perf_counter()
        _, increases[how] = search.measure(model, targets, cands, loss, how=how)
        out[f"{how}_s"] = time.perf_counter() - start
        out[f"{how}_load"] = os.getloadavg()[0]
        picks[how] = np.array(search.choose(costs, increases[how], budget.nbytes))
    same = picks["block"] == picks["model"]
    exact = increases["model"]  # the loss increases the choices are judged by: every pair measured end to end
    out.update(
        {
            "same_choice": float(same.mean()),
            "same_modules": int(same.sum()),
            "differ": {
                targets[i].name: [cands[picks["block"][i]].describe(), cands[picks["model"][i]].describe()]
                for i in np.flatnonzero(~same)
            },
            # the summed end-to-end loss increase of each choice: what the knapsack minimises
            "block_choice_loss": float(sum(exact[i, j] for i, j in enumerate(picks["block"]))),
            "model_choice_loss": float(sum(exact[i, j] for i, j in enumerate(picks["model"]))),
            "block_choice_bytes": int(sum(costs[i, j] for i, j in enumerate(picks["block"]))),
            "model_choice_bytes": int(sum(costs[i, j] for i, j in enumerate(picks["model"]))),
        }
    )
    out["other_targets"] = {}  # the same loss increases, other budgets: how much the agreement depends on the target
    for ratio in OTHER_TARGETS:
        nbytes = dataclasses.replace(budget, target_ratio=ratio).nbytes
        try:
            block, full = (np.array(search.choose(costs, increases[how], nbytes)) for how in ("block", "model"))
        except RecipeError:  # beyond the smallest candidates
            out["other_targets"][ratio] = None
            continue
        out["other_targets"][ratio] = {
            "same_choice": float((block == full).mean()),
            "loss_ratio": float(
                sum(exact[i, j] for i, j in enumerate(block)) / sum(exact[i, j] for i, j in enumerate(full))
            ),
        }
    return out


def minilm_fidelity() -> dict:
    from zoo.compress import _dense_model
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model
    from zoo.tasks.fidelity import calibration_texts, text_batch
    from zoo.tasks.text import DEFAULT_MAX_LENGTH

    path = resolve_model("minilm").path
    texts, _ = calibration_texts(None, load_recipe("search").search.calibration)
    batches = [text_batch(path, texts[i : i + 32], max_length=DEFAULT_MAX_LENGTH) for i in range(0, len(texts), 32)]
    return compare_measures(_dense_model(path), path, batches)


def minilm_task(teacher: Path) -> dict:
    from zoo.recipes import load_recipe
    from zoo.tasks import get_task
    from zoo.tasks.text import DEFAULT_MAX_LENGTH
    from zoo.train.finetune import load_for_task

    task = get_task("rotten_tomatoes", str(DATA))
    model = load_for_task(teacher, task)
    features = task.features(
        "train", teacher, limit=load_recipe("search").search.calibration, max_length=DEFAULT_MAX_LENGTH
    )
    collate = task.collator(teacher)
    batches = [
        collate([{k: v for k, v in f.items() if k != "labels"} for f in features[i : i + 32]])
        for i in range(0, len(features), 32)
    ]
    return compare_measures(model, teacher, batches)


def _agreement(label: str, m: dict) -> str:
    differ = "; ".join(f"{name}: {a} (block) vs {b} (model)" for name, (a, b) in m["differ"].items()) or "none"
    return (
        f"| {label} | {m['loss']} | {m['block_s']:.1f} ({m['block_load']:.1f}) | {m['model_s']:.1f} "
        f"({m['model_load']:.1f}) | {m['same_modules']}/{m['modules']} "
        f"({100 * m['same_choice']:.1f}%) | {m['block_choice_loss']:.4f} | {m['model_choice_loss']:.4f} | {differ} |"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="MiniLM fine-tuned on rotten_tomatoes: also compare the measures as --task searches",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-search-") as tmp:
        tmp = Path(tmp)
        src = random_bert_with_tokenizer(tmp, 768, 12)
        recipes = {"4bit": "4bit", "search": "search", "search (measure: model)": str(_model_measure_recipe(tmp))}
        runs = {}
        for i, (name, recipe) in enumerate(recipes.items()):
            runs[name] = {**compress.measure(str(src), recipe, tmp / f"out-{i}"), "load_after": os.getloadavg()[0]}
    ratio = runs["search"]["seconds"] / runs["4bit"]["seconds"]
    model_ratio = runs["search (measure: model)"]["seconds"] / runs["4bit"]["seconds"]
    minilm = {"fidelity": minilm_fidelity()}
    if args.teacher is not None:
        minilm["task"] = minilm_task(args.teacher)
    lines = [
        machine_header("The ratio-budget search's cost"),
        "",
        (
            "`python -m bench.search" + (f" --teacher {args.teacher}" if args.teacher else "") + "`. A random "
            "BERT-base-sized model (768 x 12, 110M parameters, MiniLM's tokenizer beside it), each compress in a fresh "
            "process, one after the other in this run:"
        ),
        "",
        "| recipe | time (s) | time / 4bit | peak RSS (MB) | whole ratio | load after |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {r} | {v['seconds']:.1f} | {v['seconds'] / runs['4bit']['seconds']:.2f}x | {v['peak_rss_mb']:.0f} | "
            f"{v['checkpoint_ratio']:.2f}x | {v['load_after']:.1f} |"
            for r, v in runs.items()
        ],
        "",
        (
            "Load after: the 1-minute load average when the run ended; above 2 (the cores), other work shared the "
            "machine and the times are longer than they would be alone."
        ),
        "",
        (
            f"**The search (block measure, the default) took {ratio:.1f}x a post-training 4bit compress (GPTQ) of "
            f"the same model; the goal is at most 10x: {'met' if ratio <= 10 else 'MISSED'}.** With every pair "
            f"measured end to end (`measure: model`) it took {model_ratio:.1f}x."
        ),
        "",
        (
            f"all-MiniLM-L6-v2 ({minilm['fidelity']['modules']} modules x {minilm['fidelity']['candidates']} "
            "settings), "
            "zoo.search.measure with each measure in this process; the "
            "knapsack at the recipe's default 12x on each measure's loss increases; both choices judged by the "
            "end-to-end (model) loss increases, summed over modules (what the knapsack minimises):"
        ),
        "",
        (
            "| calibration | loss | block measure s (load after) | model measure s (load after) | same setting | "
            "block's choice: loss | "
            "model's choice: loss | modules that differ (block vs model) |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---|",
        _agreement("64 built-in sentences (post-training)", minilm["fidelity"]),
    ]
    if "task" in minilm:
        lines.append(
            _agreement(
                "64 rotten_tomatoes training examples (--task; teacher: MiniLM fine-tuned on them)", minilm["task"]
            )
        )
    else:
        lines.append("| rotten_tomatoes (--task) | - | - | - | not run: no --teacher given | - | - | - |")
    lines += [
        "",
        (
            "The block measure's three end-to-end settings per module (the quartiles of its block errors) were "
            "chosen on these two MiniLM comparisons at 12x (the median alone gave 95% and 85%): the 12x "
            "agreement is in-sample; the other targets below are not what it was chosen on."
        ),
    ]
    lines += [
        "",
        (
            "The same loss increases at other targets (the knapsack's budget alone changes): modules with the "
            "same setting, and the block choice's summed end-to-end loss increase over the model choice's:"
        ),
        "",
        "| calibration | " + " | ".join(f"{r}x" for r in OTHER_TARGETS) + " |",
        "|---|" + "---:|" * len(OTHER_TARGETS),
    ]
    for label, m in minilm.items():
        lines.append(
            f"| {label} | "
            + " | ".join(
                f"{100 * o['same_choice']:.1f}% ({o['loss_ratio']:.3f}x)" if o else "unreachable"
                for o in m["other_targets"].values()
            )
            + " |"
        )
    data = {"bert_base": runs, "ratio_to_4bit": ratio, "model_measure_ratio_to_4bit": model_ratio, "minilm": minilm}
    write_report(args.out, "search", "\n".join(lines) + "\n", data)
    return data


if __name__ == "__main__":
    main()
