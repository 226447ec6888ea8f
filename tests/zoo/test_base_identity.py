"""A checkpoint whose config.json names a head class (BertForMaskedLM) while its weights are a BertModel's,
as many sentence-embedding checkpoints on the Hub are: zoo loads the model the weights are, measures
fidelity without a random head, keeps the base model's card identity and copies files by purpose."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from zoo.formats import Checkpoint

BASE_CARD = """---
license: apache-2.0
library_name: sentence-transformers
language: en
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- feature-extraction
datasets:
- s2orc
---

# A sentence-embedding model
"""


@pytest.fixture(scope="module")
def mlm_named(tiny_bert_dir, tmp_path_factory):
    """tiny BERT's BertModel weights (with its pooler), config.json naming BertForMaskedLM, a base card, a
    sentence-transformers module folder, and stray files a model folder picks up on the way."""
    path = tmp_path_factory.mktemp("identity") / "mlm-named"
    shutil.copytree(tiny_bert_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (path / "config.json").write_text(json.dumps(config))
    (path / "README.md").write_text(BASE_CARD)
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "T"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "P"},
            ]
        )
    )
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (path / "1_Pooling" / "desktop.ini").write_text("[.ShellClassInfo]")  # inside a module folder: copied whole
    (path / "desktop.ini").write_text("[.ShellClassInfo]")
    (path / "notes.txt").write_text("my notes")
    (path / "LICENSE").write_text("Apache License 2.0")
    return path


def _fresh_parameters(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.device.type == "meta"]


def test_from_pretrained_gives_the_model_the_weights_are(mlm_named, caplog):
    import zoo

    with caplog.at_level(logging.WARNING, logger="zoo"):
        model, info = zoo.from_pretrained(mlm_named, output_loading_info=True)
    assert type(model).__name__ == "BertModel" and model.pooler is not None
    assert not info["missing_keys"]  # nothing newly initialised
    assert "hold no BertForMaskedLM head, so it loads as BertModel" in caplog.text


def test_asking_for_the_head_warns_that_it_is_new(mlm_named, caplog):
    import zoo

    with caplog.at_level(logging.WARNING, logger="zoo"):
        model = zoo.from_pretrained(mlm_named, task="fill-mask")
    assert type(model).__name__ == "BertForMaskedLM"
    assert "were initialised at random" in caplog.text and "cls.predictions" in caplog.text


def test_a_compressed_copy_records_and_loads_the_class_the_weights_fill(mlm_named, run_cli, tmp_path, caplog):
    import zoo

    out = tmp_path / "int8"
    result = run_cli("compress", mlm_named, "--recipe", "int8", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "loads as        BertModel (config.json names BertForMaskedLM, whose head the weights lack)" in result.stdout
    assert Checkpoint.open(out).manifest.base_model.architecture == "BertModel"
    with caplog.at_level(logging.WARNING, logger="zoo"):
        model = zoo.from_pretrained(out)
    assert type(model).__name__ == "BertModel" and "initialised at random" not in caplog.text
    dense = zoo.from_pretrained(mlm_named)
    ids = torch.tensor([[101, 7592, 2088, 102]])
    cosine = torch.nn.functional.cosine_similarity(
        model(input_ids=ids).pooler_output, dense(input_ids=ids).pooler_output
    ).item()
    assert cosine > 0.99  # the pooler came through, compressed (int8), not random


def test_fidelity_never_goes_through_a_head_the_weights_lack(mlm_named, run_cli):
    result = run_cli("eval", mlm_named, "--task", "fidelity", "--reference", mlm_named, "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["cosine"] == pytest.approx(1.0, abs=1e-5)  # it gave 0.011, agreement 0 and KL 115
    assert set(metrics) == {"cosine"}  # no head to compare: no agreement or KL


def test_evaluating_a_task_through_a_random_head_is_refused(mlm_named, run_cli, tmp_path):
    from tests.conftest import DATA
    from tests.zoo.test_cli import assert_one_line_error

    result = run_cli("eval", mlm_named, "--task", "rotten_tomatoes", "--data", DATA / "rotten_tomatoes", "--limit", "8")
    assert_one_line_error(result, "holds no trained text-classification head", "would be random")


def test_the_card_keeps_the_base_models_identity(mlm_named, run_cli, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "int8"
    assert run_cli("compress", mlm_named, "--recipe", "int8", "--out", out).exit_code == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "sentence-transformers"
    assert card.data.language == "en" and card.data.pipeline_tag == "sentence-similarity"
    assert "s2orc" in card.data.datasets and {"sentence-transformers", "zoo"} <= set(card.data.tags)
    assert "fill-mask" not in card.content and "AutoModelForMaskedLM" not in card.content
    assert "SentenceTransformer(" in card.text and "import zoo" in card.text


def test_files_are_copied_by_purpose(mlm_named, run_cli, tmp_path):
    out = tmp_path / "int8"
    assert run_cli("compress", mlm_named, "--recipe", "int8", "--out", out).exit_code == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "desktop.ini" not in names and "notes.txt" not in names
    assert {"LICENSE", "modules.json", "vocab.txt", "tokenizer.json", "1_Pooling/config.json"} <= set(names)


def test_modules_are_listed_in_natural_order(tiny_bert_dir, compressed_models):
    """`zoo info` and the card listed layer.10 before layer.2."""
    from zoo.cards import layer_rows

    manifest = Checkpoint.open(compressed_models.path(tiny_bert_dir, "int8")).manifest
    entry = next(iter(manifest.modules.values()))
    names = [f"encoder.layer.{i}.output.dense" for i in (10, 2, 1, 11, 0)]
    renamed = manifest.model_copy(update={"modules": {name: entry for name in names}})
    assert [r.module for r in layer_rows(renamed)] == [f"encoder.layer.{i}.output.dense" for i in (0, 1, 2, 10, 11)]


def test_the_search_never_measures_through_a_head_the_weights_lack(mlm_named, run_cli, tmp_path):
    """Its sensitivity was once KL through a randomly initialised masked-LM head; it is the base model's
    hidden states, and the manifest says which it measured."""
    out = tmp_path / "searched"
    result = run_cli("compress", mlm_named, "--recipe", "search", "--target-ratio", "6", "--out", out)
    assert result.exit_code == 0, result.stderr
    measure = Checkpoint.open(out).manifest.recipe.spec["searched"]["measure"]
    assert measure.startswith("1 - cosine to the dense model's mean-pooled hidden states"), measure
