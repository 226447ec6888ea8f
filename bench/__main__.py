"""python -m bench [--quick] [--out DIR]: run every benchmark and write Markdown + JSON to DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import compress, load

parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
parser.add_argument("--quick", action="store_true", help="a reduced run for CI-like checks (a few minutes)")
parser.add_argument("--out", type=Path, default=Path("bench/results"))
args = parser.parse_args()
compress.main(args.out, args.quick)
load.main(args.out, args.quick, repeat=5)
