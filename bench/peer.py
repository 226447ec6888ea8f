"""zoo beside its peer, compressed-tensors, and the dense baselines: bytes, load, latency, accuracy.

    python -m bench.peer [--teacher DIR] [--trained DIR] [--work DIR] [--out bench/results] [--repeat 5] [--quick]

One fine-tuned dense teacher (default: the one `python -m bench --accuracy` made, bench/work/accuracy/
teacher) is stored seven ways: dense fp32 and fp16; compressed-tensors W4A16 `pack-quantized` (int4, group
128, symmetric, round-to-nearest min-max scales, every Linear but the classifier, embeddings dense, as it
does); zoo `4bit` and `4bit-2of4` post-training; and zoo `4bit` and `4bit-2of4` fine-tuned with distillation
(taken from --trained, default bench/work/accuracy/{recipe}-rt, when they exist; also in zoo's `kernel` mode,
int8 x int8 matmuls). Each is loaded in fresh processes through plain transformers `from_pretrained`
(`import zoo` first for zoo's; `zoo.from_pretrained(mode="kernel")` for kernel rows): load time is the
median of --repeat processes; peak RSS, latency (batch 32 x 64 and 1 x 128, median of 10 after 3 warm-up
passes) and rotten_tomatoes test accuracy come from the first. compressed-tensors must be installed
(`pip install compressed-tensors`); it is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, machine_header, write_report
from bench.load import _latencies_ms as latencies_ms
from bench.load import _status_mb as status_mb
from zoo.recipes import BLOCK_PATTERN
from zoo.train.finetune import copy_processor


# -- building the peer and the baselines ------------------------------------------------------------
def build_fp16(teacher: Path, out: Path) -> Path:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(teacher, dtype="float16")
    model.save_pretrained(out)
    copy_processor(teacher, out)
    return out


def build_compressed_tensors(teacher: Path, out: Path) -> tuple[Path, float]:
    """W4A16 pack-quantized, group 128, RTN: scales from each group's min/max (compressed-tensors'
    `calculate_qparams`); no calibration data, no GPTQ (that is llm-compressor's, not this library's)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config, preset_name_to_scheme
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForSequenceClassification

    start = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme("W4A16", ["Linear"])},
        ignore=["classifier"],
        format="pack-quantized",
    )
    apply_quantization_config(model, config, show_progress=False)
    for module in model.modules():
        args = getattr(getattr(module, "quantization_scheme", None), "weights", None)
        if args is None:
            continue
        w = module.weight.data
        groups = w.reshape(w.shape[0], -1, args.group_size)
        scale, zero_point = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
        module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
        module.weight_zero_point.data.copy_(zero_point.reshape(module.weight_zero_point.shape))
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    copy_processor(teacher, out)
    return out, time.perf_counter() - start


def build_zoo(teacher: Path, recipe: str, out: Path) -> tuple[Path, float]:
    start = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "zoo"),
            "compress",
            str(teacher),
            "--recipe",
            recipe,
            "--out",
            str(out),
            "--overwrite",
        ],
        check=True,
        capture_output=True,
    )
    return out, time.perf_counter() - start


# -- measuring ---------------------------------------------------------------------------------------
def weights_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def encoder_linear_bytes(path: Path) -> int:
    """Bytes of the transformer blocks' Linear weights as stored (every tensor of the module but its bias)."""
    import re

    from safetensors import safe_open

    block = re.compile(BLOCK_PATTERN)
    itemsize = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8, "I8": 1, "U8": 1}
    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            for name in f.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                if block.search(name) and ".LayerNorm." not in name and not name.endswith("bias"):
                    t = f.get_slice(name)
                    total += math.prod(t.get_shape()) * itemsize[t.get_dtype()]
    return total


def child(kind: str, path: str, full: bool, limit: int | None) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    import zoo  # registers zoo's quantization method (harmless for the others); used for kernel rows

    baseline = status_mb("VmRSS")
    start = time.perf_counter()
    if kind == "zoo-kernel":  # the int8 x int8 matmul path (approximate: activations quantized per token)
        model = zoo.from_pretrained(path, task="text-classification", mode="kernel").eval()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = {"load_s": time.perf_counter() - start, "loaded_mb": status_mb("VmRSS") - baseline}
    if full:
        from zoo.tasks import evaluate, get_task

        generator = torch.Generator().manual_seed(0)
        for name, shape in {"32x64": (32, 64), "1x128": (1, 128)}.items():
            ids = torch.randint(1000, 29000, shape, generator=generator)
            out[f"latency_{name}_ms"] = latencies_ms([model], ids, runs=10)[0]
        out["peak_mb"] = status_mb("VmHWM") - baseline
        score, _ = evaluate(model, get_task("rotten_tomatoes", str(DATA)), path, "test", limit=limit, max_length=64)
        out["accuracy"] = score.value
        out["n_examples"] = score.n_examples
    print(json.dumps(out))


def measure(kind: str, path: Path, repeat: int, limit: int | None) -> dict:
    runs = []
    for i in range(repeat):
        cmd = [sys.executable, "-m", "bench.peer", "--child", kind, str(path)] + (["--full"] if i == 0 else [])
        cmd += ["--limit", str(limit)] if limit else []
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = runs[0]
    return {**first, "load_s": statistics.median(r["load_s"] for r in runs), "load_runs": len(runs)}


def main(teacher: Path, trained: Path, work: Path, out_dir: Path, repeat: int, limit: int | None) -> dict:
    import importlib.util

    if importlib.util.find_spec("compressed_tensors") is None:
        raise SystemExit("bench.peer needs compressed-tensors: pip install -e '.[bench]'")
    if not (teacher / "config.json").is_file():
        raise SystemExit(
            f"no teacher at {teacher}: run `python -m bench --accuracy` (or zoo finetune) first, or pass --teacher DIR"
        )
    work.mkdir(parents=True, exist_ok=True)
    systems: list[tuple[str, str, Path, float | None]] = [("dense fp32 (teacher)", "dense", teacher, None)]
    fp16 = work / "dense-fp16"
    if not fp16.exists():
        build_fp16(teacher, fp16)
    systems.append(("dense fp16", "dense", fp16, None))
    ct, ct_s = build_compressed_tensors(teacher, work / "ct-w4a16")
    systems.append(("compressed-tensors W4A16 g128 (RTN)", "ct", ct, ct_s))
    for recipe in ("4bit", "4bit-2of4"):
        path, seconds = build_zoo(teacher, recipe, work / f"zoo-{recipe}-post")
        systems.append((f"zoo {recipe}, post-training", "zoo", path, seconds))
    for recipe in ("4bit", "4bit-2of4"):
        path = trained / f"{recipe}-rt"
        if (path / "config.json").is_file():
            seconds = json.loads((path / "config.json").read_text())["quantization_config"]["training"]["seconds"]
            systems.append((f"zoo {recipe}, fine-tuned", "zoo", path, seconds))
            systems.append((f"zoo {recipe}, fine-tuned, kernel mode", "zoo-kernel", path, seconds))
        else:
            print(f"note: no fine-tuned {recipe} at {path}; its row is left out", file=sys.stderr)

    fp32_bytes = weights_bytes(teacher)
    fp32_linear = encoder_linear_bytes(teacher)
    rows = []
    for label, kind, path, seconds in systems:
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        m = measure(kind, path, repeat, limit)
        nbytes, linear = weights_bytes(path), encoder_linear_bytes(path)
        rows.append(
            {
                "system": label,
                "path": str(path),
                "bytes": nbytes,
                "ratio": fp32_bytes / nbytes,
                "encoder_linear_bytes": linear,
                "encoder_linear_ratio": fp32_linear / linear,
                "compress_s": seconds,
                **m,
            }
        )
    dense = rows[0]
    md = [
        machine_header("zoo vs compressed-tensors vs dense: all-MiniLM-L6-v2 fine-tuned on rotten_tomatoes"),
        "",
        (
            f"Accuracy on the rotten_tomatoes test split ({dense.get('n_examples', '?')} examples); load time is the "
            f"median of {repeat} fresh processes; latency is the median of 10 forward passes. Ratios are against the "
            "dense fp32 teacher; encoder-linear bytes are the transformer blocks' Linear weights as stored (values, "
            "scales, zero points, patterns)."
        ),
        "",
        (
            "| system | accuracy | retention | checkpoint MB | ratio | encoder-linear MB | enc-linear ratio | load s | "
            "peak RSS MB | 32x64 ms | 1x128 ms | make s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['system']} | failed: {r['error']} |" + " |" * 10)
            continue
        make = "-" if r["compress_s"] is None else f"{r['compress_s']:.0f}"
        md.append(
            f"| {r['system']} | {100 * r['accuracy']:.2f}% | {100 * r['accuracy'] / dense['accuracy']:.1f}% | "
            f"{r['bytes'] / 1e6:.1f} | {r['ratio']:.2f}x | {r['encoder_linear_bytes'] / 1e6:.2f} | "
            f"{r['encoder_linear_ratio']:.2f}x | {r['load_s']:.2f} | {r['peak_mb']:.0f} | "
            f"{r['latency_32x64_ms']:.0f} | {r['latency_1x128_ms']:.1f} | {make} |"
        )
    markdown = "\n".join(md) + "\n"
    data = {"rows": rows, "repeat": repeat, "limit": limit}
    write_report(out_dir, "peer", markdown, data)
    return data


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        p = argparse.ArgumentParser()
        p.add_argument("--child", nargs=2)
        p.add_argument("--full", action="store_true")
        p.add_argument("--limit", type=int, default=None)
        a = p.parse_args()
        child(a.child[0], a.child[1], a.full, a.limit)
        sys.exit(0)
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, default=Path("bench/work/accuracy/teacher"))
    parser.add_argument("--trained", type=Path, default=Path("bench/work/accuracy"))
    parser.add_argument("--work", type=Path, default=Path("bench/work/peer"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 load runs, 128 test examples")
    args = parser.parse_args()
    main(args.teacher, args.trained, args.work, args.out, 2 if args.quick else args.repeat, 128 if args.quick else None)
