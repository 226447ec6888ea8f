"""Registry timings: upload, pull into an empty cache, pull again (cached copy re-verified), for the tiny
test BERT and the real all-MiniLM-L6-v2 compressed with 4bit-2of4; to the local registry and to a
Hub-compatible server on 127.0.0.1 (olah serving the downloads, the tests' write stand-in taking the
uploads: tests/zoo/hub_standin.py); and `zoo list` over an index of 1000 models.

    python -m bench.registry [--out bench/results]

Each timing is one in-process call (median of 3 for the pulls of a cached copy and the listings); the
CLI listing is a fresh `zoo list --json` process, imports included."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_header, with_minilm_tokenizer, write_report

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def tiny_bert(work: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = work / "tiny-bert"
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=160,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    return with_minilm_tokenizer(path)


def compressed(src: str, work: Path, name: str) -> Path:
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    return write_compact(resolve_model(src), load_recipe("4bit-2of4"), work / name).path


def round_trip(model: Path, name: str, registry: str, label: str, home: Path, token: str | None) -> dict:
    from zoo import registry as reg

    os.environ["ZOO_HOME"] = str(home)
    upload_s, published = timed(lambda: reg.upload(model, name, registry=registry, token=token))
    first_s, path = timed(lambda: reg.pull(name, registry=registry, token=token))
    again_s, _ = timed(lambda: reg.pull(name, registry=registry, token=token), repeat=3)
    return {
        "model": model.name,
        "registry": label,
        "files": published.nfiles,
        "nbytes": published.nbytes,
        "upload_s": upload_s,
        "pull_s": first_s,
        "pull_cached_s": again_s,
        "path": str(path),
    }


def big_index(home: Path, model: Path, n: int) -> float:
    """Upload once, then copy its index entry under n names; returns the in-process list time."""
    from zoo import registry as reg
    from zoo.registry.index import Index

    os.environ["ZOO_HOME"] = str(home)
    reg.upload(model, "zoo:bench/seed")
    index = Index.parse((home / "index.json").read_bytes(), "bench")
    seed = index.models.pop("bench/seed")
    for i in range(n):
        index.models[f"bench/model-{i:04d}/4bit-2of4"] = seed.model_copy(deep=True)
    (home / "index.json").write_text(index.dump())
    list_s, (_, rows) = timed(lambda: reg.list_models(), repeat=3)
    assert len(rows) == n
    return list_s


def main(out: Path) -> None:
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = False  # the only server is on 127.0.0.1
    from tests.zoo.hub_standin import Olah, WriteStandIn

    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    rows = []
    try:
        tiny = compressed(str(tiny_bert(work)), work, "tiny-4bit-2of4")
        minilm = compressed("minilm", work, "minilm-4bit-2of4")
        (work / "olah").mkdir()
        olah = Olah(work / "olah").start()
        token = "bench-token"
        standin = WriteStandIn(olah, token=token).start()
        try:
            for model in (tiny, minilm):
                rows.append(
                    round_trip(
                        model,
                        f"zoo:bench/{model.name}",
                        str(work / "registry"),
                        "local folder",
                        work / f"home-{model.name}",
                        None,
                    )
                )
                rows.append(
                    round_trip(
                        model,
                        f"zoo:bench/{model.name}",
                        standin.url,
                        "olah + write stand-in",
                        work / f"home-hub-{model.name}",
                        token,
                    )
                )
        finally:
            standin.stop()
            olah.stop()
        n = 1000
        list_s = big_index(work / "home-list", tiny, n)
        env = {**os.environ, "ZOO_HOME": str(work / "home-list")}
        cli_s, _ = timed(
            lambda: subprocess.run(
                [sys.executable, "-m", "zoo", "list", "--json"], env=env, check=True, capture_output=True
            ),
            repeat=3,
        )
        index_mb = (work / "home-list" / "index.json").stat().st_size / 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        machine_header("Registry: upload, pull, list"),
        "",
        "| model | registry | files | MB | upload (s) | pull, empty cache (s) | pull, cached (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['registry']} | {r['files']} | {r['nbytes'] / 1e6:.2f} | {r['upload_s']:.2f} "
            f"| {r['pull_s']:.2f} | {r['pull_cached_s']:.2f} |"
        )
    listing = (
        f"`zoo list` over an index of {n} models ({index_mb:.1f} MB of JSON): {list_s * 1000:.0f} ms in-process "
        f"(read, validate, tabulate), {cli_s:.2f} s for a fresh `zoo list --json` process (imports included)."
    )
    lines += [
        "",
        listing,
        "",
        "Every pull, cached or not, re-hashes every file (index, then manifest) before returning the path.",
    ]
    write_report(
        out,
        "registry",
        "\n".join(lines) + "\n",
        {
            "round_trips": [{k: v for k, v in r.items() if k != "path"} for r in rows],
            "list": {"models": n, "index_mb": index_mb, "in_process_s": list_s, "cli_s": cli_s},
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    main(parser.parse_args().out)
