"""Post-training compression: time, size and fidelity per built-in recipe on all-MiniLM-L6-v2, what each
word-embedding codec costs, and the peak memory of streaming compression on a larger random BERT.

    python -m bench.compress [--quick] [--out bench/results]

Each compression runs in a fresh process (`python -m bench.compress --child ...`) so times include what a user
waits for (imports, planning, GPTQ where a recipe asks for it, writing) and peak RSS is that process's own.
Fidelity: mean cosine of mean-pooled, L2-normalised sentence embeddings of the compressed model (loaded back
from disk) against the dense model's, on the rotten_tomatoes test sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DATA, machine_header, write_report

RECIPES = ["int8", "4bit", "2of4", "4bit-2of4", "8bit-1of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"]
# word-embedding codecs measured alone (everything else left dense): what a recipe can choose from
EMBEDDING_CODECS = {
    "int8 per-row": "{codec: int, bits: 8, group_size: null}",
    "int4 g128": "{codec: int, bits: 4, group_size: 128}",
    "int3 g128": "{codec: int, bits: 3, group_size: 128}",
    "2:4 + int4 g128": "{codec: nm, n: 2, m: 4, values: {codec: int, bits: 4, group_size: 128}}",
    "1:4 + int8 g128": "{codec: nm, n: 1, m: 4, values: {codec: int, bits: 8, group_size: 128}}",
    "kmeans 16 per table": "{codec: codebook, bits: 4}",
    "kmeans 4 per row": "{codec: codebook, bits: 2, group_rows: 1}",
    "int2 g128 asym": "{codec: int, bits: 2, group_size: 128, symmetric: false}",
    "ternary g128": "{codec: ternary, group_size: 128}",
    "binary g64": "{codec: binary, group_size: 64}",
    "binary g128": "{codec: binary, group_size: 128}",
    "kmeans 2 per row": "{codec: codebook, bits: 1, group_rows: 1}",
}


class Fidelity:
    """The dense MiniLM's sentence embeddings of the test sentences, and any checkpoint's cosine to them."""

    def __init__(self, model_dir: Path, limit: int | None = None):
        import csv

        from transformers import AutoTokenizer

        with open(DATA / "test.tsv", newline="", encoding="utf-8") as f:
            texts = [row["sentence"] for row in csv.DictReader(f, dialect="excel-tab")][:limit]
        tok = AutoTokenizer.from_pretrained(model_dir)
        self.batches = [
            dict(tok(texts[i : i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt"))
            for i in range(0, len(texts), 64)
        ]
        self.reference = self.embed(model_dir)

    def embed(self, path: Path):
        import torch
        import torch.nn.functional as F

        import zoo

        model = zoo.from_pretrained(path).eval()
        outs = []
        with torch.inference_mode():
            for b in self.batches:
                hidden, mask = model(**b).last_hidden_state, b["attention_mask"].unsqueeze(-1).float()
                outs.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(outs)

    def cosine(self, path: Path) -> float:
        return float((self.embed(path) * self.reference).sum(-1).mean())


FP16_REST = """name: fp16-rest
description: every weight matrix and table kept exactly (fp32); norms, biases and heads cast to fp16
dense_dtype: float16
rules:
  - {targets: ['.'], kinds: [linear, embedding, conv], codec: {codec: dense, dtype: float32}}
"""


def embedding_recipe(tmp: Path, label: str, codec: str) -> Path:
    path = tmp / f"emb-{len(list(tmp.glob('emb-*.yaml')))}.yaml"
    path.write_text(
        f"name: emb\ndescription: {label} word embeddings only\nrules:\n"
        f"  - {{targets: [word_embeddings], kinds: [embedding], codec: {codec}}}\n"
    )
    return path


def peak_rss_mb() -> float:
    """This process's own high-water RSS. (getrusage's ru_maxrss is no good in a child: Linux carries
    the parent's peak across fork+exec into it.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model: str, recipe: str, out: str, shard: int, plan_only: bool) -> None:
    """Runs in the measured process: compress (or only plan), print one JSON line."""
    start = time.perf_counter()
    from zoo.formats import SafetensorsDir

    from zoo.compress import make_plan, write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    resolved = resolve_model(model)
    if plan_only:
        make_plan(SafetensorsDir(resolved.path), resolved.path, load_recipe(recipe))
        sizes = {}
    else:
        result = write_compact(resolved, load_recipe(recipe), out, max_shard_bytes=shard)
        sizes = result.manifest.sizes.model_dump()
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "peak_rss_mb": peak_rss_mb(),
                **sizes,
            }
        )
    )


def information_bits(shape: tuple[int, ...], codec) -> float:
    """The fewest bits that hold what a codec stores: log2 of the number of distinct payloads it can encode
    (b bits per int-b or k-means value, 1 per binary, log2 3 per ternary, log2 C(m, n) per N:M group), plus
    its side information (scales, zero points, centroids) at the size it is stored in. The stored bytes over
    this bound is the format's overhead (byte alignment, 3-bit N:M codes for log2 6 = 2.58 bits...). Each codec
    states its own bound (`Codec.information_bits`, formats/codecs/)."""
    from zoo.formats.codecs import codec_for

    return codec_for(codec).information_bits(tuple(shape), codec)


def encoder_linear_bound(path: Path) -> float:
    """Information bound, in bytes, of a checkpoint's encoder-linear modules (from its manifest)."""
    from zoo.formats import Checkpoint

    manifest = Checkpoint.open(path, verify=False).manifest
    return sum(information_bits(tuple(e.shape), e.codec) for e in manifest.modules.values() if e.encoder_linear) / 8


def rounding(path: Path) -> str:
    """How the stored weights were rounded: GPTQ (and on what), or to nearest."""
    from zoo.formats import Checkpoint  # not at the top: a --child process times its own imports

    gptq = Checkpoint.open(path, verify=False).manifest.recipe.spec.get("gptq")
    if not gptq:
        return "nearest"
    return "nearest (GPTQ not used)" if gptq["calibrated_on"].startswith("not used") else "GPTQ"


def measure(model: str, recipe: str, out: Path, *, shard: int = 2 * 10**9, plan_only: bool = False) -> dict:
    cmd = [sys.executable, "-m", "bench.compress", "--child", model, recipe, str(out), str(shard)]
    if plan_only:
        cmd.append("--plan-only")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def random_bert(path: Path, hidden: int, layers: int) -> tuple[int, int]:
    """A random BERT checkpoint; returns (file bytes, largest tensor bytes)."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64, intermediate_size=4 * hidden
    )
    with torch.no_grad():
        model = BertModel(config)
    model.save_pretrained(path)
    largest = max(p.numel() * p.element_size() for p in model.parameters())
    return (path / "model.safetensors").stat().st_size, largest


def main(out_dir: Path, quick: bool) -> dict:
    from zoo.resolve import resolve_model

    lines = [machine_header("Post-training compression (zoo compress, no fine-tuning)")]
    results = {"recipes": {}, "embeddings": {}, "streaming": {}}
    minilm = resolve_model("minilm").path
    fidelity = Fidelity(minilm, limit=64 if quick else None)
    n = sum(len(b["input_ids"]) for b in fidelity.batches)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines += [
            "",
            "all-MiniLM-L6-v2 (packaged copy, 90.9 MB fp32 safetensors); each run is a fresh process, time includes",
            "imports, planning and GPTQ where the recipe rounds with it. Whole ratio: every weight file against the",
            "source's; encoder-linear: the blocks' linear weights against fp32. Bound: the codec's information bound",
            "for the encoder-linear weights (bits per value, log2 C(m,n) per N:M group, side information as stored);",
            "overhead: how much more the stored bytes are. Cosine: mean-pooled, L2-normalised sentence embeddings of",
            f"the stored model against the dense model's, mean over {n} rotten_tomatoes test sentences.",
            "",
            (
                "| recipe | time (s) | peak RSS (MB) | checkpoint (MB) | whole ratio | encoder-linear ratio "
                "| cosine to dense | rounding | encoder-linear (MB) | bound (MB) | overhead |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for recipe in RECIPES[:2] if quick else RECIPES:
            r = measure("minilm", recipe, tmp / recipe)
            r["encoder_linear_bound_nbytes"] = bound = encoder_linear_bound(tmp / recipe)
            r["cosine"] = fidelity.cosine(tmp / recipe)
            r["rounding"] = rounding(tmp / recipe)
            results["recipes"][recipe] = r
            lines.append(
                f"| {recipe} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['checkpoint_nbytes'] / 1e6:.2f} | "
                f"{r['checkpoint_ratio']:.2f}x | {r['encoder_linear_ratio']:.2f}x | {r['cosine']:.4f} | "
                f"{r['rounding']} | "
                f"{r['encoder_linear_nbytes'] / 1e6:.2f} | {bound / 1e6:.2f} | "
                f"{100 * (r['encoder_linear_nbytes'] / bound - 1):.1f}% |"
            )
            print(lines[-1], flush=True)

        lines += [
            "",
            (
                "Word-embedding codecs, each applied alone (every other tensor as it was, fp32): the table's "
                "bytes (30522 x 384, 46.9 MB in fp32) and the same cosine."
            ),
            "",
            "| word-embedding codec | table (MB) | cosine to dense |",
            "|---|---:|---:|",
        ]
        for label, codec in list(EMBEDDING_CODECS.items())[:2] if quick else EMBEDDING_CODECS.items():
            out = tmp / f"emb-{label.replace(' ', '-').replace(':', '')}"
            measure("minilm", str(embedding_recipe(tmp, label, codec)), out)
            from zoo.formats import Checkpoint

            table = Checkpoint.open(out, verify=False).manifest.modules["embeddings.word_embeddings"].nbytes
            results["embeddings"][label] = {"nbytes": table, "cosine": fidelity.cosine(out), "codec": codec}
            lines.append(f"| {label} | {table / 1e6:.2f} | {results['embeddings'][label]['cosine']:.4f} |")
            print(lines[-1], flush=True)

        (tmp / "fp16-rest.yaml").write_text(FP16_REST)
        measure("minilm", str(tmp / "fp16-rest.yaml"), tmp / "fp16-rest")
        results["fp16_rest_cosine"] = fidelity.cosine(tmp / "fp16-rest")
        lines += [
            "",
            (
                f"What no codec stores (LayerNorms, biases, the classifier head) is kept in fp16 by every built-in "
                f"recipe: with only that cast (every matrix and table exact), the cosine to the dense model is "
                f"{results['fp16_rest_cosine']:.5f}."
            ),
        ]

        hidden, layers = (384, 4) if quick else (1024, 24)
        source, largest = random_bert(tmp / "big", hidden, layers)
        shard = 100 * 10**6
        base = measure(str(tmp / "big"), "4bit", tmp / "unused", plan_only=True)
        full = measure(str(tmp / "big"), "4bit", tmp / "big-4bit", shard=shard)
        results["streaming"] = {
            "source_mb": source / 1e6,
            "largest_tensor_mb": largest / 1e6,
            "shard_mb": shard / 1e6,
            "plan_only_rss_mb": base["peak_rss_mb"],
            "compress_rss_mb": full["peak_rss_mb"],
            "seconds": full["seconds"],
        }
        s = results["streaming"]
        lines += [
            "",
            (
                f"Streaming: a random BERT (hidden {hidden}, {layers} layers), {s['source_mb']:.0f} MB fp32, "
                f"recipe 4bit, shards of {s['shard_mb']:.0f} MB."
            ),
            "",
            "| | peak RSS (MB) |",
            "|---|---:|",
            f"| planning only (imports + meta model + headers) | {s['plan_only_rss_mb']:.0f} |",
            f"| full compression | {s['compress_rss_mb']:.0f} |",
            f"| difference | {s['compress_rss_mb'] - s['plan_only_rss_mb']:.0f} |",
            f"| largest tensor + one output shard | {s['largest_tensor_mb'] + s['shard_mb']:.0f} |",
            f"| whole source checkpoint | {s['source_mb']:.0f} |",
            "",
            f"Compression of that model took {s['seconds']:.1f} s.",
        ]
    write_report(out_dir, "compress", "\n".join(lines) + "\n", results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two recipes and a small model (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "RECIPE", "OUT", "SHARD"), help=argparse.SUPPRESS)
    parser.add_argument("--plan-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, recipe, out, shard = args.child
        child(model, recipe, out, int(shard), args.plan_only)
    else:
        main(args.out, args.quick)
