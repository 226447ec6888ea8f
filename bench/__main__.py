"""python -m bench [--quick] [--accuracy] [--out DIR]: run the benchmarks, write Markdown + JSON to DIR.

Size/compression time and load/latency always run; --accuracy adds the fine-tuning table
(bench/accuracy.py: about an hour or more on 2 CPU cores; with --quick, 128 examples per split
and two recipes, to check the machinery only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import accuracy, compress, load

parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
parser.add_argument("--quick", action="store_true", help="a reduced run for CI-like checks (a few minutes)")
parser.add_argument("--accuracy", action="store_true", help="also fine-tune and measure accuracy per recipe")
parser.add_argument("--out", type=Path, default=Path("bench/results"))
args = parser.parse_args()
compress.main(args.out, args.quick)
load.main(args.out, args.quick, repeat=5)
if args.accuracy:
    if args.quick:
        accuracy.main(args.out / "quick", ["int8", "4bit-2of4"], None, Path("bench/work/accuracy-quick"), 128)
    else:
        accuracy.main(args.out, accuracy.RECIPES, None, Path("bench/work/accuracy"), None)
