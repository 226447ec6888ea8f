"""python -m bench [--quick] [--accuracy] [--out DIR] [--teacher DIR]: every benchmark, Markdown + JSON + PNG.

In order: post-training compression size/time with each codec's information bound (compress), load time,
memory and latency per recipe and mode (load), growth with model size (scale), optionally fine-tuned accuracy
per recipe (--accuracy: 13-52 minutes per recipe on 2 CPU cores, several hours in all, plus about 1.5 hours
for Kronecker and block pruning (structure); resumable), zoo beside compressed-tensors and dense fp32/fp16
(peer: needs a fine-tuned teacher, made once under bench/work/ when absent, 17-26 minutes), the headline table
and plot (summary), deploy speed against ONNX Runtime (speed; not with --quick) and registry upload/pull/list
times (registry; not with --quick). --quick runs each part
reduced (a small teacher on 256 examples, one or two recipes, small models, one load per row, 128 test
examples) to check the machinery in about ten minutes; its numbers are not the results, so it writes to
bench/results/quick unless --out says otherwise."""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from bench import accuracy, compress, load, peer, registry, scale, speed, structure, summary

parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
parser.add_argument("--quick", action="store_true", help="a reduced run for CI-like checks (under ten minutes)")
parser.add_argument("--accuracy", action="store_true", help="also fine-tune and measure accuracy per recipe")
parser.add_argument("--out", type=Path, default=None, help="[default: bench/results, or bench/results/quick]")
parser.add_argument(
    "--teacher", type=Path, default=None, help="fine-tuned dense MiniLM [default: made under bench/work]"
)
parser.add_argument("--work", type=Path, default=Path("bench/work"), help="kept between runs (teacher, models)")
args = parser.parse_args()
out = args.out or Path("bench/results/quick" if args.quick else "bench/results")
limit = 128 if args.quick else None
acc_work = args.work / ("accuracy-quick" if args.quick else "accuracy")
start = time.perf_counter()

compress.main(out, args.quick)
load.main(out, args.quick, repeat=5)
scale.main(out, args.quick, 2 if args.quick else 3)
teacher = args.teacher or accuracy.ensure_teacher(acc_work, 256 if args.quick else None)
if args.accuracy:
    recipes = ["int8", "4bit-2of4"] if args.quick else accuracy.RECIPES
    accuracy.main(out, recipes, teacher, acc_work, limit)
    if not args.quick:  # Kronecker and block pruning: about 1.5 hours more
        structure.main(out, structure.RECIPES, teacher, acc_work)
peer.main(teacher, acc_work, args.work / ("peer-quick" if args.quick else "peer"), out, 1 if args.quick else 5, limit)
summary.main(out)
if not args.quick:  # deploy speed: torch modes, zoo export and ONNX Runtime's int8 (about 25 minutes)
    speed.main(teacher, acc_work, args.work / "speed", out, quick=False)
    if importlib.util.find_spec("olah") is None:
        print("bench: registry timings skipped (olah is not installed: pip install -e '.[test]')")
    else:
        registry.main(out)
print(f"bench: done in {(time.perf_counter() - start) / 60:.1f} min -> {out}")
