"""Fuzz zoo's readers with mutated checkpoints and report the outcomes (bench/results/fuzz.md).

    python -m bench.fuzz [--mutants 10000] [--seed 1] [--out bench/results]

Mutants of two micro checkpoints (tests/zoo/fuzzing.py says how they are made and judged) go through
`zoo info` and `zoo.from_pretrained`, each in a worker process under a 6 GB address-space limit and a
60 s alarm. Exit status 1 if any outcome is a failure (untyped error, changed model, missed body
corruption, memory bomb, hang or crash)."""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_header, write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    from tests.zoo import fuzzing

    with tempfile.TemporaryDirectory(prefix="zoo-fuzz-") as tmp:
        root = Path(tmp)
        fuzzing.make_checkpoints(root)
        start = time.perf_counter()
        counts, records = fuzzing.run(root, args.seed, args.mutants)
        seconds = time.perf_counter() - start
    failed = fuzzing.failures(records)
    by_outcome = collections.Counter()
    for (_, what, outcome), n in counts.items():
        by_outcome[(what, outcome.split("@")[0])] += n
    kinds = sorted({kind for kind, _, _ in counts})
    lines = [
        machine_header("Fuzzing zoo's readers"),
        "",
        (
            f"`python -m bench.fuzz --mutants {args.mutants} --seed {args.seed}`: {len(records):,} mutants of two "
            f"micro 4bit-2of4 checkpoints (one file; three shards and an index), {seconds:.0f} s "
            f"({1000 * seconds / max(len(records), 1):.0f} ms per mutant, each through `zoo info` and "
            "`zoo.from_pretrained`). How mutants are made and judged: tests/zoo/fuzzing.py."
        ),
        "",
        (
            f"**Failures: {len(failed)}** (untyped exceptions, loads that compute something else, missed body "
            "corruption, memory bombs, hangs, crashes)."
        ),
        "",
        "| outcome | zoo info | zoo.from_pretrained |",
        "|---|---:|---:|",
    ]
    for outcome in sorted({o for _, o in by_outcome}):
        lines.append(f"| {outcome} | {by_outcome[('info', outcome)]:,} | {by_outcome[('load', outcome)]:,} |")
    lines += [
        "",
        "By mutation:",
        "",
        "| mutation | zoo info: typed / ok | load: typed / same / body-caught |",
        "|---|---|---|",
    ]
    for kind in kinds:
        info = [counts[(kind, "info", o)] for o in ("typed", "ok")]
        load = [counts[(kind, "load", o)] for o in ("typed", "same", "body-caught")]
        lines.append(f"| {kind} | {' / '.join(map(str, info))} | {' / '.join(map(str, load))} |")
    lines += [
        "",
        (
            "`same`: the load succeeded and the model's outputs equal the original's exactly (a harmless "
            "edit: a description, an unused key). `body-caught`: a flipped weight byte that a plain load "
            "(which hashes nothing) let through with different outputs; `zoo.from_pretrained(..., "
            "verify=True)` and `zoo verify` refused every one."
        ),
    ]
    if failed:
        lines += ["", "Failures:", "", *[f"- {r}" for r in failed[:50]]]
    write_report(
        args.out,
        "fuzz",
        "\n".join(lines) + "\n",
        {
            "mutants": len(records),
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "failures": failed,
            "counts": {" ".join(k): v for k, v in sorted(counts.items())},
        },
    )
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
