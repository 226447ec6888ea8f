"""The headline: one table and one plot (accuracy against size) from the other benchmarks' JSON.

    python -m bench.summary [--out bench/results]

Reads OUT/peer.json (dense fp32/fp16, compressed-tensors and zoo measured in one harness), OUT/accuracy.json
(every fine-tuned recipe) and OUT/load.json (the fastest execution mode of each recipe), and writes
OUT/summary.md, OUT/summary.json and OUT/accuracy_vs_size.png. Nothing is measured here; missing inputs are
named, not invented.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bench.common import write_report


def _read(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fastest_modes(load: dict | None) -> dict[str, tuple[str, float]]:
    """recipe -> (mode, 32x64 latency ms) of its fastest mode in bench.load."""
    best: dict[str, tuple[str, float]] = {}
    for key, r in (load or {}).get("configs", {}).items():
        recipe, mode = key.split("/")
        ms = r.get("latency_32x64_ms")
        if ms is not None and (recipe not in best or ms < best[recipe][1]):
            best[recipe] = (mode, ms)
    return best


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    style = {
        "zoo fine-tuned": ("*", "#d62728", 140),
        "zoo post-training": ("o", "#ff9896", 45),
        "compressed-tensors": ("D", "#1f77b4", 60),
        "dense": ("s", "#444444", 60),
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), dpi=110)
    for ax, key, label in (
        (axes[0], "checkpoint_mb", "whole checkpoint (MB, log)"),
        (axes[1], "encoder_linear_mb", "encoder-linear weights (MB, log)"),
    ):
        for group, (marker, color, size) in style.items():
            pts = [p for p in points if p["group"] == group]
            if not pts:
                continue
            ax.scatter(
                [p[key] for p in pts],
                [100 * p["accuracy"] for p in pts],
                marker=marker,
                c=color,
                s=size,
                label=group,
                zorder=3,
            )
            for p in pts:
                ax.annotate(
                    p["label"], (p[key], 100 * p["accuracy"]), xytext=(5, 3), textcoords="offset points", fontsize=7
                )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        values = [p[key] for p in points]
        if max(values) / min(values) < 10:  # less than a decade: label the minor ticks too
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel(label)
        ax.set_ylabel("rotten_tomatoes test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("all-MiniLM-L6-v2 fine-tuned on rotten_tomatoes: accuracy against size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _measured(out: Path, name: str) -> str:
    """The date a report says it was measured on ('?' when it does not)."""
    path = out / f"{name}.md"
    found = re.search(r"Measured (\d{4}-\d{2}-\d{2})", path.read_text()) if path.is_file() else None
    return found.group(1) if found else "?"


def main(out: Path) -> dict:
    peer, accuracy, load = _read(out, "peer"), _read(out, "accuracy"), _read(out, "load")
    missing = [n for n, d in (("peer", peer), ("accuracy", accuracy), ("load", load)) if d is None]
    if peer is None:
        sys.exit(f"no {out}/peer.json: run `python -m bench.peer` first")
    rows = [r for r in peer["rows"] if "error" not in r]
    dense = rows[0]
    fp32_linear = dense["encoder_linear_bytes"]
    ct = next((r for r in rows if r["system"].startswith("compressed-tensors")), None)
    modes = fastest_modes(load)
    md = [
        "## Headline: zoo against compressed-tensors and dense",
        "",
        (
            f"all-MiniLM-L6-v2 fine-tuned on rotten_tomatoes (test split, {dense.get('n_examples')} examples). "
            f"The first block comes from one `bench.peer` run (measured {_measured(out, 'peer')}; same harness, "
            f"fresh processes, plain transformers `from_pretrained`); the second from `bench.accuracy` (measured "
            f"{_measured(out, 'accuracy')}; each recipe fine-tuned with distillation) and `bench.load` (measured "
            f"{_measured(out, 'load')}; fastest mode)."
        ),
        "",
        (
            "| system | accuracy | retention | checkpoint MB | whole ratio | enc-linear ratio | load s | 32x64 ms "
            "| vs compressed-tensors (whole file, 32x64 latency) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    points = []
    for r in rows:
        vs = "-"
        if ct is not None and r is not ct and not r["system"].startswith("dense"):
            vs = (
                f"{ct['bytes'] / r['bytes']:.2f}x smaller, {ct['latency_32x64_ms'] / r['latency_32x64_ms']:.2f}x faster"
            )
        md.append(
            f"| {r['system']} | {100 * r['accuracy']:.2f}% | {100 * r['accuracy'] / dense['accuracy']:.1f}% | "
            f"{r['bytes'] / 1e6:.1f} | {r['ratio']:.2f}x | {r['encoder_linear_ratio']:.2f}x | {r['load_s']:.2f} | "
            f"{r['latency_32x64_ms']:.0f} | {vs} |"
        )
        group = (
            "dense"
            if r["system"].startswith("dense")
            else "compressed-tensors"
            if r is ct
            else "zoo fine-tuned"
            if "fine-tuned" in r["system"]
            else "zoo post-training"
        )
        label = (
            r["system"]
            .replace(", fine-tuned", "")
            .replace(", post-training", " (post)")
            .replace(" (teacher)", "")
            .replace(", kernel mode", " (kernel)")
        )
        label = "CT W4A16" if r is ct else label
        if "kernel" not in r["system"]:  # the same checkpoint as its materialize row: one point is enough
            points.append(
                {
                    "group": group,
                    "label": label,
                    "accuracy": r["accuracy"],
                    "checkpoint_mb": r["bytes"] / 1e6,
                    "encoder_linear_mb": r["encoder_linear_bytes"] / 1e6,
                }
            )
    if accuracy is not None:
        md += [
            "",
            (
                "| recipe (fine-tuned) | accuracy | retention | checkpoint MB | whole ratio | enc-linear ratio | "
                "training min | fastest mode, 32x64 ms |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        shown = {p["label"] for p in points if p["group"] == "zoo fine-tuned"}
        for r in accuracy["rows"]:
            fastest = modes.get(r["recipe"])
            speed = f"{fastest[0]}, {fastest[1]:.0f}" if fastest else "not in bench.load"
            md.append(
                f"| {r['recipe']} | {100 * r['test']:.2f}% | {100 * r['retention']:.1f}% | "
                f"{r['checkpoint_mb']:.1f} | {r['checkpoint_ratio']:.2f}x | {r['encoder_linear_ratio']:.2f}x | "
                f"{r['train_seconds'] / 60:.1f} | {speed} |"
            )
            if f"zoo {r['recipe']}" not in shown:
                points.append(
                    {
                        "group": "zoo fine-tuned",
                        "label": r["recipe"],
                        "accuracy": r["test"],
                        "checkpoint_mb": r["checkpoint_mb"],
                        "encoder_linear_mb": fp32_linear / r["encoder_linear_ratio"] / 1e6,
                    }
                )
    dates = {name: _measured(out, name) for name in ("peer", "accuracy", "load")}
    if len(set(dates.values())) > 1:
        md += [
            "",
            (
                f"These runs are from different dates ({', '.join(f'{n} {d}' for n, d in dates.items())}): a zoo "
                "row of the first block is the checkpoint that release wrote, and may differ in size and accuracy "
                "from the same recipe in the second; fastest-mode latencies are of the checkpoints bench.load "
                "measured then."
            ),
        ]
    if missing:
        md += ["", f"Not included (no results yet): {', '.join(missing)}."]
    try:
        plot(points, out / "accuracy_vs_size.png")
        md += ["", "![accuracy against size](accuracy_vs_size.png)"]
    except ImportError:
        md += ["", "(no plot: matplotlib is not installed)"]
    data = {"points": points, "missing": missing}
    write_report(out, "summary", "\n".join(md) + "\n", data)
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.summary", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    main(parser.parse_args().out)
