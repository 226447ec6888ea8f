"""Data-parallel fine-tuning on CPU: the packaged all-MiniLM-L6-v2 compressed with 4bit-2of4 on rotten_tomatoes
(`zoo compress --task`), run as 1 process x 2 threads and as 2 processes x 1 thread (`torchrun`, gloo), on the
same teacher, recipe, seed and global batch (so the same number of optimizer steps), on a --limit subset of each
split so that a run takes minutes; each set-up --repeat times, in turn.

The teacher is fine-tuned once, as one process, on --teacher-limit examples per split, before any run (its time
is reported, not compared). Each run
is timed from outside, whole (process start, training, packing, evaluation of the stored checkpoint); the
training loop's own time is read from its last progress line. Accuracy and agreement are the manifest's, measured
on the stored checkpoint. The machine's load average is recorded before and after each run: on a shared 2-core
machine it moves the times.

    python -m bench.ddp [--limit 512] [--repeat 2] [--teacher-limit 2048] [--work DIR] [--out bench/results]"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, machine_header, write_report

RECIPE = "4bit-2of4"
TITLE = "Data-parallel fine-tuning on CPU: 2 processes x 1 thread against 1 process x 2 threads"


def _seconds(text: str) -> float:
    """zoo.console.duration back to seconds: 2m05s, 45s."""
    m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
    assert m, text
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def _zoo(args: list[str], *, processes: int, threads: int) -> tuple[str, float, tuple[float, float]]:
    """Run `zoo ARGS` as `processes` processes of `threads` threads each: its output, wall seconds, and the
    1-minute load average before and after."""
    launcher = [sys.executable, "-m", "zoo"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        launcher += ["-m", "zoo"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "ZOO_LOG_EVERY": "60"}
    before = os.getloadavg()[0]
    start = time.perf_counter()
    result = subprocess.run(launcher + args, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = os.getloadavg()[0]
    if result.returncode != 0:
        sys.exit(f"bench.ddp: zoo {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr, wall, (before, after)


def _result(manifest: dict, role: str, split: str, metric: str = "accuracy") -> float:
    return next(
        r["value"] for r in manifest["evaluation"] if (r["role"], r["split"], r["metric"]) == (role, split, metric)
    )


def run(label: str, teacher: Path, out: Path, limit: int, *, processes: int, threads: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(out.name + ".work"), ignore_errors=True)
    args = ["compress", str(teacher), "--recipe", RECIPE, "--task", "rotten_tomatoes", "--data", str(DATA)]
    args += ["--limit", str(limit), "--out", str(out)]
    print(f"[ddp] {label} ...", file=sys.stderr, flush=True)
    output, wall, load = _zoo(args, processes=processes, threads=threads)
    steps = re.findall(rf"training {RECIPE}: step (\d+)/(\d+), .*?, (\S+) elapsed", output)
    assert steps and steps[-1][0] == steps[-1][1], output[-2000:]
    manifest = json.loads((out / "config.json").read_text())["quantization_config"]
    t = manifest["training"]
    return {
        "label": label,
        "processes": processes,
        "threads_per_process": threads,
        "world_size": t.get("world_size"),
        "backend": t.get("backend"),
        "global_batch_size": t.get("global_batch_size"),
        "steps": t["steps"],
        "epochs": t["epochs"],
        "wall_s": round(wall, 1),
        "train_loop_s": _seconds(steps[-1][2]),
        "load_before": round(load[0], 2),
        "load_after": round(load[1], 2),
        "test_accuracy": _result(manifest, "compressed", "test"),
        "validation_accuracy": _result(manifest, "compressed", "validation"),
        "teacher_test_accuracy": _result(manifest, "teacher", "test"),
        "agreement": _result(manifest, "compressed", "test", "teacher_agreement"),
        "test_examples": next(
            r["n_examples"] for r in manifest["evaluation"] if (r["role"], r["split"]) == ("compressed", "test")
        ),
    }


def main(out_dir: Path, work: Path, limit: int, repeat: int = 2, teacher_limit: int = 2048) -> None:
    work.mkdir(parents=True, exist_ok=True)
    teacher = work / f"teacher-{teacher_limit}"
    teacher_s = None
    if not (teacher / "config.json").is_file():
        print("[ddp] fine-tuning the teacher (one process, 2 threads) ...", file=sys.stderr, flush=True)
        args = ["finetune", "minilm", "--task", "rotten_tomatoes", "--data", str(DATA), "--out", str(teacher)]
        _, teacher_s, _ = _zoo([*args, "--limit", str(teacher_limit), "--overwrite"], processes=1, threads=2)
    rows = []
    for i in range(repeat):  # in turn, the order flipped each round (A B B A ...): a load that drifts hits both
        for processes, threads in ((1, 2), (2, 1)) if i % 2 == 0 else ((2, 1), (1, 2)):
            label = f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
            label += " (torchrun, gloo)" if processes > 1 else ""
            out = work / f"run-{len(rows) + 1}"
            rows.append(run(f"{len(rows) + 1}. {label}", teacher, out, limit, processes=processes, threads=threads))
    ones = [r for r in rows if r["processes"] == 1]
    twos = [r for r in rows if r["processes"] == 2]
    one, two = ones[0], twos[0]
    teacher_time = f"{teacher_s / 60:.1f} min" if teacher_s is not None else "made by an earlier run"
    setup = (
        f"all-MiniLM-L6-v2, recipe `{RECIPE}` (its training section: {one['epochs']:g} epochs), rotten_tomatoes "
        f"**limited to {limit} examples per split** (`--limit {limit}`: {limit} training sentences, "
        f"{one['test_examples']} test sentences) so that a run takes minutes; the teacher fine-tuned once, as "
        f"one process, on {teacher_limit} examples per split (`zoo finetune --limit {teacher_limit}`, 2 epochs, "
        f"{teacher_time}). Every run trains the same global batch of "
        f"{one['global_batch_size']} examples for {one['steps']} steps, and is timed whole, from outside "
        f"(start, training, packing, evaluating the stored checkpoint). {repeat} runs of each set-up, in turn, on a "
        "machine shared with "
        "other work (1-minute load average before and after each run in the table): the times are what this run "
        "measured, not a steady-state speed."
    )
    head = (
        "| run | processes x threads | backend | steps | wall time | training loop | load before/after "
        "| test acc | val acc | agreement | teacher test acc |"
    )
    lines = [machine_header(TITLE), "", setup, "", head, "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['processes']} x {r['threads_per_process']} | {r['backend'] or '-'} | {r['steps']} "
            f"| {r['wall_s'] / 60:.2f} min | {r['train_loop_s'] / 60:.2f} min | {r['load_before']} / "
            f"{r['load_after']} | {r['test_accuracy']:.2%} | {r['validation_accuracy']:.2%} "
            f"| {r['agreement']:.2%} | {r['teacher_test_accuracy']:.2%} |"
        )

    def total(runs: list[dict], key: str) -> float:
        return sum(r[key] for r in runs)

    wall_ratio = total(twos, "wall_s") / total(ones, "wall_s")
    loop_ratio = total(twos, "train_loop_s") / total(ones, "train_loop_s")
    points = (two["test_accuracy"] - one["test_accuracy"]) * 100
    same = all(r["test_accuracy"] == one["test_accuracy"] for r in ones) and all(
        r["test_accuracy"] == two["test_accuracy"] for r in twos
    )
    summary = (
        f"Over the {len(rows)} runs, 2 processes x 1 thread took {wall_ratio:.2f}x the wall time of 1 process x 2 "
        f"threads ({loop_ratio:.2f}x the training loop's). Test accuracy {two['test_accuracy']:.2%} against "
        f"{one['test_accuracy']:.2%} ({points:+.2f} points; the two set-ups are not the same computation step for "
        "step: each process draws dropout for its own shard of a batch, and the gradients are summed in another "
        "order)" + ("; repeated runs of one set-up gave the same accuracy." if same else "; repeated runs differ.")
    )
    lines += ["", summary, ""]
    data = {"recipe": RECIPE, "limit": limit, "repeat": repeat, "teacher_limit": teacher_limit}
    data.update({"teacher_s": teacher_s, "runs": rows})
    data.update({"wall_ratio_2x1_vs_1x2": round(wall_ratio, 3), "loop_ratio_2x1_vs_1x2": round(loop_ratio, 3)})
    write_report(out_dir, "ddp", "\n".join(lines), data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ddp", description=__doc__)
    parser.add_argument("--limit", type=int, default=512, help="examples per split (default 512)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each set-up, in turn (default 2)")
    parser.add_argument("--teacher-limit", type=int, default=2048, help="the teacher's examples per split")
    parser.add_argument("--work", type=Path, default=Path("bench/work/ddp"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    a = parser.parse_args()
    main(a.out, a.work, a.limit, a.repeat, a.teacher_limit)
