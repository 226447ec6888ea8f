"""Deploy speed: zoo's torch modes and its ONNX export against torch fp32 and ONNX Runtime's own int8, side by side.

    python -m bench.speed [--teacher DIR] [--trained DIR] [--work DIR] [--out bench/results] [--quick]

Every latency is a ratio measured in one process: all systems of a model are loaded together and timed in turn
(the order reversed every round), with 2 threads for torch and for ONNX Runtime, whose thread spinning is off
(`session.intra_op.allow_spinning = 0`: spinning threads would take the cores from whatever runs next). Each
figure is the median of the rounds, after 3 warm-up passes, at batch 32 x 64 tokens and 1 x 128.

Models:
  - all-MiniLM-L6-v2 fine-tuned on rotten_tomatoes: the dense teacher (--teacher, default the one
    `python -m bench --accuracy` made) and zoo's int8, 4bit and 4bit-2of4 fine-tuned from it (--trained, default
    bench/work/accuracy/{recipe}-rt). Accuracy is on the test split (tests/data/rotten_tomatoes), tokens cut at 64.
  - A BERT-base-sized random BERT (bench.scale's), compressed post-training with round-to-nearest (latency only:
    its weights mean nothing).

Systems: torch fp32 (transformers); ONNX Runtime fp32 of the same model (torch's exporter, as zoo export uses
it); ONNX Runtime's `quantize_dynamic` QInt8 of that graph, per tensor (its default) and `per_channel=True`;
zoo in materialize mode and kernel mode (also compiled, `compile=True`: every recipe on MiniLM, int8 on the
BERT-base-sized model, whose compiles take minutes); `zoo export --onnx` with `--kernel int8` (the default) and
`nbits`.

Also: cold load (fresh processes, median of 5: `from_pretrained` for torch, InferenceSession for ONNX
Runtime; imports not timed) and the CLI's start-up (bench.startup).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DATA, machine_header, write_report

RECIPES = ("int8", "4bit", "4bit-2of4")
SHAPES = {"32x64": (32, 64), "1x128": (1, 128)}
THREADS = 2
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> str:
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    return f"{model}; " + ", ".join(f"{f} {'yes' if f in words else 'no'}" for f in FLAGS)


# -- making the systems ---------------------------------------------------------------------------------------
def export_dense(model_dir: Path, out: Path, *, classifier: bool) -> Path:
    """The dense model through torch's exporter as zoo export runs it (same inputs, outputs and options)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    from zoo.export import _inputs_for, _Outputs, _run_exporter

    if out.exists():
        return out
    cls = AutoModelForSequenceClassification if classifier else AutoModel
    model = cls.from_pretrained(model_dir).eval()
    names, example, dynamic = _inputs_for(model)
    outputs = ("logits",) if classifier else ("last_hidden_state",)
    program = _run_exporter(_Outputs(model, outputs).eval(), dict(zip(names, example)), outputs, dynamic, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out))
    return out


def ort_int8(fp32: Path, per_channel: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = fp32.with_name(fp32.stem + ("-q8pc" if per_channel else "-q8") + ".onnx")
    if not out.exists():
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)
    return out


def zoo_export(ckpt: Path, work: Path, kernel: str) -> Path:
    from zoo.export import export_onnx

    out = work / f"{ckpt.name}-onnx-{kernel}"
    if not (out / "model.onnx").exists():
        export_onnx(ckpt, out, kernel=kernel, overwrite=True)
    return out / "model.onnx"


def compress_rtn(src: Path, recipe: str, out: Path) -> Path:
    """Post-training, round to nearest (no GPTQ): bench.scale's random BERT needs only its layout."""
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    if not (out / "config.json").exists():
        write_compact(resolve_model(str(src)), load_recipe(recipe).model_copy(update={"gptq": None}), out)
    return out


def file_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


# -- running them -----------------------------------------------------------------------------------------------
class Torch:
    def __init__(self, model, size_of: Path):
        self.model, self.nbytes = model, file_bytes(size_of)

    def __call__(self, feed: dict):
        import torch

        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v) for k, v in feed.items()})
        return (out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state).numpy()


class Ort:
    def __init__(self, path: Path):
        from zoo.export import session

        self.session = session(path, THREADS)
        self.names = [i.name for i in self.session.get_inputs()]
        self.nbytes = file_bytes(path)

    def __call__(self, feed: dict):
        return self.session.run(None, {n: feed[n] for n in self.names})[0]


def feeds(shape: tuple[int, int], seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 29000, size=shape, dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def latencies(systems: dict, feed: dict, rounds: int) -> dict[str, float]:
    """Median ms of each system over `rounds`, timed in turn (the order reversed every other round)."""
    for run in systems.values():
        for _ in range(3):
            run(feed)
    times: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(rounds):
        order = list(systems.items()) if r % 2 == 0 else list(systems.items())[::-1]
        for name, run in order:
            start = time.perf_counter()
            run(feed)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def test_batches(tokenizer_dir: Path, limit: int | None) -> tuple[list[dict], list[int]]:
    from transformers import AutoTokenizer

    with open(DATA / "test.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    batches = []
    for i in range(0, len(rows), 64):
        enc = tok(
            [r["sentence"] for r in rows[i : i + 64]], padding=True, truncation=True, max_length=64, return_tensors="np"
        )
        ids = enc["input_ids"].astype("int64")
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": enc["attention_mask"].astype("int64"),
                "token_type_ids": enc.get("token_type_ids", ids * 0).astype("int64"),
            }
        )
    return batches, [int(r["label"]) for r in rows]


def accuracy(run, batches: list[dict], labels: list[int]) -> float:
    predictions = [int(p) for feed in batches for p in run(feed).argmax(-1)]
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


# -- cold load, in fresh processes -------------------------------------------------------------------------------
def child(kind: str, path: str) -> None:
    """Time one load in this fresh process. Imports are not timed, for any kind: the model's transformers class
    (its modeling module) and, for zoo, zoo.loaders are imported first."""
    if kind.startswith("ort"):  # plain onnxruntime, as a deployment without zoo or torch runs it
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        start = time.perf_counter()
        ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        print(json.dumps({"load_s": time.perf_counter() - start}))
        return
    import torch
    import transformers

    torch.set_num_threads(THREADS)

    config = json.loads((Path(path) / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])  # imports its modeling module
    if kind == "dense":
        start = time.perf_counter()
        cls.from_pretrained(path)
    else:
        import zoo.loaders

        import zoo

        start = time.perf_counter()
        zoo.from_pretrained(path, mode=kind.removeprefix("zoo-"))
    print(json.dumps({"load_s": time.perf_counter() - start}))


def cold_load(kind: str, path: Path, repeat: int) -> tuple[float, float]:
    """(the load itself, the whole fresh process: interpreter, imports and load), medians of `repeat` runs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": str(THREADS)}
    loads, processes = [], []
    for _ in range(repeat):
        cmd = [sys.executable, "-m", "bench.speed", "--child", kind, str(path)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        processes.append(time.perf_counter() - start)
        loads.append(json.loads(done.stdout.strip().splitlines()[-1])["load_s"])
    return statistics.median(loads), statistics.median(processes)


# -- the report ---------------------------------------------------------------------------------------------------
def model_rows(
    label: str, dense_dir: Path, ckpts: dict[str, Path], work: Path, rounds: int, eval_data, compiled: tuple[str, ...]
) -> dict:
    """Every system of one model: sizes, latencies at each shape, and accuracy when `eval_data` is given (not for
    compiled models: each new batch shape would compile again; they compute what kernel mode does). `compiled`:
    the recipes also timed in kernel mode with compile=True."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    import zoo

    torch.set_num_threads(THREADS)
    classifier = eval_data is not None
    fp32 = export_dense(dense_dir, work / f"{dense_dir.name}-fp32.onnx", classifier=classifier)
    dense = (AutoModelForSequenceClassification if classifier else AutoModel).from_pretrained(dense_dir).eval()
    systems: dict = {
        "torch fp32": Torch(dense, dense_dir),
        "ORT fp32": Ort(fp32),
        "ORT int8, per tensor": Ort(ort_int8(fp32, False)),
        "ORT int8, per channel": Ort(ort_int8(fp32, True)),
    }
    for recipe, ckpt in ckpts.items():
        for mode in ("materialize", "kernel"):
            systems[f"zoo {recipe}, torch {mode}"] = Torch(zoo.from_pretrained(ckpt, mode=mode).eval(), ckpt)
        if recipe in compiled:  # compiled on its first forward of each shape: in the warm-up, not timed
            model = zoo.from_pretrained(ckpt, mode="kernel", compile=True).eval()
            systems[f"zoo {recipe}, torch kernel, compiled"] = Torch(model, ckpt)
        for kernel in ("int8", "nbits"):
            systems[f"zoo {recipe}, ONNX --kernel {kernel}"] = Ort(zoo_export(ckpt, work, kernel))
    result: dict = {"model": label, "systems": {name: {"bytes": s.nbytes} for name, s in systems.items()}}
    for shape_name, shape in SHAPES.items():
        print(f"{label}: timing {shape_name} ...", file=sys.stderr, flush=True)
        for name, ms in latencies(systems, feeds(shape), rounds).items():
            result["systems"][name][f"ms_{shape_name}"] = ms
    if eval_data is not None:
        batches, labels = eval_data
        for name, run in systems.items():
            if name.endswith("compiled"):
                continue
            print(f"{label}: evaluating {name} ...", file=sys.stderr, flush=True)
            result["systems"][name]["accuracy"] = accuracy(run, batches, labels)
    return result


def table(result: dict) -> list[str]:
    s = result["systems"]
    peer, base = s["ORT int8, per tensor"], s["torch fp32"]
    has_acc = "accuracy" in base
    head = "| system | file MB |" + (" test accuracy |" if has_acc else "")
    for shape in SHAPES:
        head += f" {shape} ms | vs ORT int8 | vs torch fp32 |"
    lines = [head, "|---|---:|" + ("---:|" if has_acc else "") + "---:|---:|---:|" * len(SHAPES)]
    for name, r in s.items():
        acc = f" {100 * r['accuracy']:.2f}% |" if "accuracy" in r else " - |"
        line = f"| {name} | {r['bytes'] / 1e6:.1f} |" + (acc if has_acc else "")
        for shape in SHAPES:
            ms = r[f"ms_{shape}"]
            line += f" {ms:.1f} | {peer[f'ms_{shape}'] / ms:.2f}x | {base[f'ms_{shape}'] / ms:.2f}x |"
        lines.append(line)
    return lines


def verdict(ok: bool, yes: str = "met", no: str = "**missed**") -> str:
    return yes if ok else no


def goals(result: dict) -> list[str]:
    """The issue's goals, checked on one model's figures."""
    s = result["systems"]
    out = []
    peer = s["ORT int8, per tensor"]
    for recipe in RECIPES:
        for kernel in ("int8", "nbits"):
            name = f"zoo {recipe}, ONNX --kernel {kernel}"
            if name not in s:
                continue
            r = s[name]
            for shape in SHAPES:
                ratio = peer[f"ms_{shape}"] / r[f"ms_{shape}"]
                out.append(f"- {name}, {shape}: {ratio:.2f}x ORT int8's speed: {verdict(ratio >= 1.0)} (>= 1.0x)")
            smaller = r["bytes"] < peer["bytes"]
            out.append(
                f"- {name}: file {r['bytes'] / 1e6:.1f} MB vs {peer['bytes'] / 1e6:.1f} MB: "
                f"{verdict(smaller, 'smaller', '**not smaller**')}"
            )
            if "accuracy" in r:
                gain = 100 * (r["accuracy"] - peer["accuracy"])
                out.append(
                    f"- {name}: accuracy {gain:+.2f} points vs ORT int8: "
                    f"{verdict(gain > 0, 'higher', '**not higher**')}"
                )
                kern = s[f"zoo {recipe}, torch kernel"]["accuracy"]
                gap = 100 * abs(r["accuracy"] - kern)
                out.append(f"- {name}: {gap:.2f} points from zoo's kernel mode: {verdict(gap <= 0.3)} (<= 0.3)")
        kern, mat = s.get(f"zoo {recipe}, torch kernel"), s.get(f"zoo {recipe}, torch materialize")
        if kern is None or mat is None:
            continue
        base = s["torch fp32"]
        comp = s.get(f"zoo {recipe}, torch kernel, compiled")
        if comp is not None:
            ratio = base["ms_32x64"] / comp["ms_32x64"]
            out.append(
                f"- zoo {recipe}, torch kernel mode compiled, 32x64: {ratio:.2f}x torch fp32: {verdict(ratio >= 2.0)} "
                "(>= 2.0x)"
            )
        ratio = base["ms_32x64"] / kern["ms_32x64"]
        out.append(
            f"- zoo {recipe}, torch kernel mode, 32x64: {ratio:.2f}x torch fp32: {verdict(ratio >= 2.0)} (>= 2.0x)"
        )
        for shape in SHAPES:
            ratio = base[f"ms_{shape}"] / mat[f"ms_{shape}"]
            out.append(
                f"- zoo {recipe}, materialize (the default), {shape}: {ratio:.2f}x torch fp32: "
                f"{verdict(ratio >= 1.0)} (>= 1.0x)"
            )
        if "accuracy" in kern:
            gap = 100 * abs(kern["accuracy"] - mat["accuracy"])
            out.append(
                f"- zoo {recipe}, kernel mode accuracy: {gap:.2f} points from materialize: "
                f"{verdict(gap <= 0.5)} (<= 0.5)"
            )
    return out


def main(teacher: Path, trained: Path, work: Path, out_dir: Path, quick: bool) -> dict:
    import onnxruntime
    import torch

    from bench.scale import CONFIGS, random_bert_with_tokenizer
    from bench.startup import main as startup

    if not (teacher / "config.json").is_file():
        raise SystemExit(f"no teacher at {teacher}: run `python -m bench --accuracy` first, or pass --teacher DIR")
    torch.set_num_threads(THREADS)
    work.mkdir(parents=True, exist_ok=True)
    rounds, repeat, limit = (5, 2, 128) if quick else (15, 5, None)
    trained_ckpts = {r: trained / f"{r}-rt" for r in RECIPES if (trained / f"{r}-rt" / "config.json").is_file()}
    results = [
        model_rows(
            "all-MiniLM-L6-v2, fine-tuned", teacher, trained_ckpts, work, rounds, test_batches(teacher, limit), RECIPES
        )
    ]

    hidden, layers = CONFIGS[-1]
    base_dir = work / f"random-bert-{hidden}x{layers}"
    if not (base_dir / "config.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            made = random_bert_with_tokenizer(Path(tmp), hidden, layers)
            os.replace(made, base_dir)
    base_ckpts = {r: compress_rtn(base_dir, r, work / f"{base_dir.name}-{r}") for r in RECIPES}
    results.append(
        model_rows(
            f"random BERT {hidden}x{layers} (BERT-base-sized)", base_dir, base_ckpts, work, rounds, None, ("int8",)
        )
    )

    print("cold loads ...", file=sys.stderr, flush=True)
    loads = {"dense fp32, torch": cold_load("dense", teacher, repeat)}
    for recipe, ckpt in trained_ckpts.items():
        for mode in ("materialize", "kernel"):
            loads[f"zoo {recipe}, torch {mode}"] = cold_load(f"zoo-{mode}", ckpt, repeat)
    fp32 = work / f"{teacher.name}-fp32.onnx"
    loads["ORT fp32 session"] = cold_load("ort", fp32, repeat)
    loads["ORT int8 session"] = cold_load("ort", ort_int8(fp32, False), repeat)
    for recipe, ckpt in trained_ckpts.items():
        loads[f"zoo {recipe}, ONNX --kernel int8 session"] = cold_load("ort", zoo_export(ckpt, work, "int8"), repeat)
    starts = startup(repeat=repeat)

    md = [
        machine_header("Deploy speed: zoo's torch modes and ONNX export against torch fp32 and ONNX Runtime int8"),
        "",
        f"CPU: {cpu_flags()}. onnxruntime {onnxruntime.__version__}, {THREADS} threads, spinning off.",
        "",
        (
            "How: `python -m bench.speed` (its docstring). Ratios are measured side by side in one process "
            f"({rounds} interleaved rounds, median); 'vs ORT int8' is ONNX Runtime's `quantize_dynamic` (per tensor) "
            "of the same dense model: above 1.00x is faster than it."
        ),
    ]
    for result in results:
        md += ["", f"### {result['model']}", "", *table(result), "", "Goals:", "", *goals(result)]
    dense_load, dense_process = loads["dense fp32, torch"]
    md += [
        "",
        f"### Cold load (fresh processes, median of {repeat})",
        "",
        (
            "'load' is `from_pretrained` (or `InferenceSession`) alone, after the imports it needs (the model's "
            "transformers class, and zoo.loaders for zoo); 'process' is the whole fresh process: interpreter, imports "
            "(torch and transformers for the torch rows, onnxruntime alone for ONNX Runtime's) and load."
        ),
        "",
        "| what | load s | vs dense fp32 | process s | vs dense fp32 |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {k} | {a:.3f} | {a / dense_load:.2f}x | {b:.2f} | {b / dense_process:.2f}x |"
            for k, (a, b) in loads.items()
        ],
        "",
        "Goal: a zoo `from_pretrained` no slower than dense fp32's (<= 1.00x), load alone: "
        + ", ".join(
            f"{k.removeprefix('zoo ').removesuffix(', torch materialize')} {verdict(v[0] <= dense_load)}"
            for k, v in loads.items()
            if k.startswith("zoo") and "materialize" in k
        )
        + "; whole process: "
        + ", ".join(
            f"{k.removeprefix('zoo ').removesuffix(', torch materialize')} {verdict(v[1] <= dense_process)}"
            for k, v in loads.items()
            if k.startswith("zoo") and "materialize" in k
        )
        + ".",
        "",
        f"### CLI start-up (fresh processes, median of {repeat}; goal <= 0.6 s)",
        "",
        "| command | s |",
        "|---|---:|",
        *[f"| `{k}` | {v:.3f} |" for k, v in starts.items()],
    ]
    data = {"models": results, "cold_load_s": loads, "startup_s": starts, "cpu": cpu_flags(), "quick": quick}
    write_report(out_dir, "speed", "\n".join(md) + "\n", data)
    return data


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, default=Path("bench/work/accuracy/teacher"))
    parser.add_argument("--trained", type=Path, default=Path("bench/work/accuracy"))
    parser.add_argument("--work", type=Path, default=Path("bench/work/speed"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="5 rounds, 2 loads, 128 test examples")
    args = parser.parse_args()
    main(args.teacher, args.trained, args.work, args.out, args.quick)
