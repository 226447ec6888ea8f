"""A seeded mutator for zoo checkpoints, and the outcome of `zoo info` and `zoo.from_pretrained` on each mutant.

Two micro checkpoints (a 1-layer BERT compressed with 4bit-2of4: one file, and sharded with an index) are
mutated: bytes flipped in a safetensors body or header, files truncated, config.json edited as JSON (a value
replaced by a hostile one, a key removed, the quantization_config dropped) or as bytes, nested too deeply,
the safetensors header edited as JSON, the shard index pointed outside the directory.

Each mutant runs in a worker process under a memory limit and a per-mutant alarm, so a crash, a hang or a
memory bomb is seen as such. Outcomes:
- `typed`: a ZooError (the CLI: exit 1 and one `error:` line);
- `same`: the load succeeded and the model computes exactly what the original does;
- `body-caught`: a flipped body byte changed the outputs of a plain load (which hashes nothing, for speed),
  and both `verify=True` and `zoo verify` refuse it, as they must;
- anything else is a failure: `untyped:<Error>`, `different` (a load that computes something else),
  `body-MISSED`, `memory` (peak RSS over 1.5x a normal load's), `hang`, `crash`.

    python -m tests.zoo.fuzzing worker ROOT SEED START COUNT   (what run() starts)
"""

from __future__ import annotations

import collections
import json
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import traceback
from pathlib import Path

FAILURES = ("untyped", "different", "body-MISSED", "memory", "hang", "crash")
HOSTILE = [
    -1,
    0,
    1,
    2**63,
    10**12,
    1.5,
    "x",
    "",
    None,
    True,
    False,
    [],
    {},
    [0],
    [384, 0],
    [-5, 3],
    "[bold]x[/bold]",
    "\x1b[31mred",
    "e\udcff",
    "a" * 5000,
    {"a": 1},
    "../../etc/passwd",
    "/abs/path",
]
KINDS = ("body", "header", "truncate", "config-json", "config-raw", "deep", "header-json", "index")
ALARM_S = 60
MEMORY_LIMIT = 6 << 30


def make_checkpoints(root: Path) -> dict[str, Path]:
    """The micro checkpoints every mutant starts from: `single` (model.safetensors) and `sharded` (an index)."""
    import torch
    from transformers import BertModel

    from tests.conftest import tiny_bert_config, with_tokenizer
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    torch.manual_seed(0)
    config = tiny_bert_config(max_position_embeddings=32)
    dense = root / "dense"
    BertModel(config).save_pretrained(dense)
    with_tokenizer(dense)
    recipe = load_recipe("4bit-2of4").model_copy(update={"gptq": None})  # rounding plays no part here
    return {
        "single": write_compact(resolve_model(str(dense)), recipe, root / "single").path,
        "sharded": write_compact(resolve_model(str(dense)), recipe, root / "sharded", max_shard_bytes=150_000).path,
    }


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:8]):
            yield from _paths(value, (*prefix, i))


def _set(obj, path, value) -> None:
    for part in path[:-1]:
        obj = obj[part]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


def _header(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def mutate(rng: random.Random, d: Path, originals: dict[str, bytes]) -> str:
    """Mutate the checkpoint in `d` (restored from `originals` first by the caller); returns the kind."""
    shards = sorted(n for n in originals if n.endswith(".safetensors"))
    kind = rng.choice(KINDS if "model.safetensors.index.json" in originals else KINDS[:-1])
    shard = rng.choice(shards)
    if kind in ("body", "header"):
        data = bytearray(originals[shard])
        (n,) = struct.unpack("<Q", data[:8])
        lo, hi = (8 + n, len(data)) if kind == "body" else (0, 8 + n)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
        (d / shard).write_bytes(bytes(data))
    elif kind == "truncate":
        name = rng.choice([*shards, "config.json"])
        (d / name).write_bytes(originals[name][: rng.randrange(len(originals[name]))])
    elif kind == "config-json":
        config = json.loads(originals["config.json"])
        path = rng.choice([p for p in _paths(config) if p])
        _set(config, path, rng.choice([*HOSTILE, KeyError]))
        (d / "config.json").write_text(json.dumps(config))
    elif kind == "config-raw":
        data = bytearray(originals["config.json"])
        data[rng.randrange(len(data))] = rng.randrange(256)
        (d / "config.json").write_bytes(bytes(data))
    elif kind == "deep":
        depth = rng.choice([100, 5000, 200_000])
        text = originals["config.json"].decode().rstrip().removesuffix("}")
        (d / "config.json").write_text(text + ', "deep": ' + "[" * depth + "]" * depth + "}")
    elif kind == "header-json":
        header, body = _header(originals[shard])
        _set(header, rng.choice([p for p in _paths(header) if p]), rng.choice([*HOSTILE, KeyError]))
        raw = json.dumps(header).encode()
        (d / shard).write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    else:  # index
        index = json.loads(originals["model.safetensors.index.json"])
        path = rng.choice([p for p in _paths(index) if p])
        _set(index, path, rng.choice(["../../outside.safetensors", "/etc/passwd", *HOSTILE, KeyError]))
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return kind


def _outcome(fn) -> tuple[str, object]:
    from zoo.formats.errors import ZooError

    try:
        return "ok", fn()
    except ZooError:
        return "typed", None
    except RecursionError:
        return "untyped:RecursionError", None
    except Exception as exc:  # noqa: BLE001 - what a fuzz test is for
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return f"untyped:{type(exc).__name__}@{Path(frame.filename).name}:{frame.lineno}", None


def _info(d: Path) -> str:
    from typer.testing import CliRunner

    from zoo.cli import app

    result = CliRunner().invoke(app, ["info", str(d)])
    if result.exit_code == 0:
        return "ok"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "):
        return "typed"
    exc = result.exception
    return f"untyped:{type(exc).__name__}" if exc is not None and not isinstance(exc, SystemExit) else "untyped:output"


def worker(root: Path, seed: int, start: int, count: int) -> None:
    """Run mutants start..start+count-1 of `seed`, one JSON line each on stdout."""
    import torch
    from zoo.formats import Checkpoint

    import zoo

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("hang")))
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    bases = {name: root / name for name in ("single", "sharded")}
    originals = {name: {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} for name, path in bases.items()}
    want = {name: zoo.from_pretrained(path)(input_ids=ids).last_hidden_state for name, path in bases.items()}
    normal_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = random.Random(seed)
    for i in range(start + count):
        base = rng.choice(sorted(bases))
        mutant_rng = random.Random(rng.random())
        if i < start:
            continue
        d = root / "mutant"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        for name, data in originals[base].items():
            (d / name).write_bytes(data)
        kind = mutate(mutant_rng, d, originals[base])
        signal.alarm(ALARM_S)
        try:
            info = _info(d)
            load, out = _outcome(lambda d=d: zoo.from_pretrained(d)(input_ids=ids).last_hidden_state)
            if load == "ok":
                load = "same" if torch.equal(out, want[base]) else "different"
            if load == "different" and kind == "body":
                verified, _ = _outcome(lambda d=d: zoo.from_pretrained(d, verify=True))
                checked, _ = _outcome(lambda d=d: Checkpoint.open(d, verify=True))
                load = "body-caught" if verified == checked == "typed" else "body-MISSED"
        except TimeoutError:
            info, load = "hang", "hang"
        finally:
            signal.alarm(0)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 1.5 * normal_rss
        print(
            json.dumps({"i": i, "base": base, "kind": kind, "info": info, "load": "memory" if grew else load}),
            flush=True,
        )
        if grew:
            return  # peak RSS only grows: a fresh worker measures the next mutants


def run(root: Path, seed: int, count: int) -> tuple[collections.Counter, list[dict]]:
    """Every mutant's outcome (workers restarted after a crash, a hang or a memory bomb)."""
    records: list[dict] = []
    done = 0
    while done < count:
        worker_cmd = [
            sys.executable,
            "-m",
            "tests.zoo.fuzzing",
            "worker",
            str(root),
            str(seed),
            str(done),
            str(count - done),
        ]
        repo = Path(__file__).resolve().parents[2]
        proc = subprocess.run(
            worker_cmd, cwd=repo, capture_output=True, text=True, check=False, timeout=ALARM_S * (count - done) + 120
        )
        got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        records += got
        done += len(got)
        if done < count and proc.returncode != 0:  # the worker died on mutant `done`: a crash
            records.append(
                {"i": done, "base": "?", "kind": "?", "info": "crash", "load": "crash", "stderr": proc.stderr[-2000:]}
            )
            done += 1
        elif done < count and not got:
            raise RuntimeError(f"the fuzz worker made no progress: {proc.stderr[-2000:]}")
    counts = collections.Counter()
    for r in records:
        counts[(r["kind"], "info", r["info"])] += 1
        counts[(r["kind"], "load", r["load"])] += 1
    return counts, records


def failures(records: list[dict]) -> list[dict]:
    return [r for r in records if any(str(r[k]).startswith(FAILURES) for k in ("info", "load"))]


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
