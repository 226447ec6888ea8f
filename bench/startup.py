"""How long the light `zoo` commands take in a fresh process: `zoo --help`, `zoo recipes` and `zoo list` (of an
empty local registry), beside `python -c pass`, the interpreter's own start. Each is the median of `repeat`
runs, in seconds of wall-clock time, so the figure includes everything a user waits for.

    python -m bench.startup [--zoo PATH/TO/zoo] [--repeat 5]
"""

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

COMMANDS = {"--help": ["--help"], "recipes": ["recipes"], "list": ["list"]}


def _median_s(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(zoo: str | None = None, repeat: int = 5) -> dict[str, float]:
    """{'python -c pass': s, 'zoo --help': s, 'zoo recipes': s, 'zoo list': s}, each the median of `repeat`
    fresh processes; `zoo` is the console script to time (default: the one beside this interpreter)."""
    zoo = zoo or str(Path(sys.executable).with_name("zoo"))
    python = str(Path(zoo).with_name("python"))
    with tempfile.TemporaryDirectory() as home:  # an empty local registry
        env = {**os.environ, "ZOO_HOME": home, "OMP_NUM_THREADS": "1"}
        env.pop("ZOO_REGISTRY", None)
        result = {"python -c pass": _median_s([python, "-c", "pass"], env, repeat)}
        for label, args in COMMANDS.items():
            result[f"zoo {label}"] = _median_s([zoo, *args], env, repeat)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--zoo", default=shutil.which("zoo"), help="the zoo console script to time")
    parser.add_argument("--repeat", type=int, default=5)
    cli = parser.parse_args()
    for what, seconds in main(cli.zoo, cli.repeat).items():
        print(f"{what:16} {seconds:.3f} s")
