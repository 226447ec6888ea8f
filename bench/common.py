"""What every benchmark report shares: the machine it ran on, and where results go."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

# the rotten_tomatoes splits every accuracy and fidelity figure is measured on
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "rotten_tomatoes"


def machine_header(title: str) -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"## {title}\n\n"
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} with {cores} CPU cores "
        f"({platform.processor() or platform.platform()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}."
    )


def write_report(out_dir: Path, name: str, markdown: str, data: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(markdown)
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(markdown)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def with_minilm_tokenizer(path: Path) -> Path:
    """Copy the packaged MiniLM's tokenizer beside a random BERT's weights (the vocabularies match), so recipes
    that calibrate on text (GPTQ) run as they would on a real model."""
    import shutil

    from zoo.resolve import resolve_model

    minilm = resolve_model("minilm").path
    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm / name, path / name)
    return path
