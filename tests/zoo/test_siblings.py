"""The models a card plots beside its own (zoo.siblings), and upload staging (zoo.registry.stage_upload): without
the CLI."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from zoo.cards import Point, results
from zoo.formats import Checkpoint


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_REGISTRY", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def ckpt(tiny_bert_dir, compressed_models) -> Path:
    return compressed_models.path(tiny_bert_dir, "int8")


def measured(
    src: Path,
    dst: Path,
    value: float,
    *,
    dataset: str = "rotten_tomatoes",
    split: str = "test",
    metric: str = "accuracy",
) -> Path:
    """A copy of `src` whose manifest records a teacher's result and a compressed one."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"]["evaluation"] = [
        {
            "role": role,
            "task": dataset,
            "dataset": dataset,
            "split": split,
            "metric": metric,
            "value": v,
            "n_examples": 100,
        }
        for role, v in (("teacher", 0.9), ("compressed", value))
    ]
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def own_results(path: Path):
    return results(Checkpoint.open(path).manifest)


def test_sibling_points_plot_checkpoints_measured_on_the_same_data(ckpt, tmp_path):
    from zoo.siblings import NotPlotted, sibling_points

    own = own_results(measured(ckpt, tmp_path / "own", 0.85))
    same = measured(ckpt, tmp_path / "same", 0.7)
    other = measured(ckpt, tmp_path / "other", 0.6, dataset="sst2")
    got = sibling_points(own, [same, other, ckpt])
    size = Checkpoint.open(ckpt).manifest.sizes.checkpoint_nbytes
    assert got.points == [Point("same", size, 0.7, "sibling")]
    assert got.not_plotted == [NotPlotted(other, ("sst2", "test")), NotPlotted(ckpt, None)]
    assert sibling_points(own, []).points == []


def test_listed_points_take_same_metric_dataset_and_split_but_not_the_model_itself(ckpt, tmp_path):
    from zoo.formats.manifest import EvalResult

    from zoo.registry import ListedModel
    from zoo.siblings import listed_points

    own = own_results(measured(ckpt, tmp_path / "own", 0.85))

    def listed(name: str, **result) -> ListedModel:
        fields = {
            "role": "compressed",
            "task": "rotten_tomatoes",
            "dataset": "rotten_tomatoes",
            "split": "test",
            "metric": "accuracy",
            "value": 0.5,
            "n_examples": 100,
            **result,
        }
        return ListedModel(
            name=f"zoo:{name}",
            revision="0" * 40,
            revisions=1,
            recipe="int8",
            base_model="tiny",
            size_nbytes=2000,
            checkpoint_nbytes=1000,
            checkpoint_ratio=4.0,
            encoder_linear_ratio=4.0,
            result=EvalResult(**fields) if result.get("value", 1) is not None else None,
            created="2026-01-01T00:00:00Z",
            repo=None,
        )

    models = [
        listed("a", value=0.75),
        listed("b", split="validation"),
        listed("c", dataset="sst2"),
        listed("d", metric="f1"),
        listed("e", value=None),
        listed("me/self", value=0.8),
    ]
    assert listed_points(own, models, exclude="me/self") == [Point("a", 1000, 0.75, "sibling")]
    assert listed_points(own, models, exclude="zoo:me/self") == [Point("a", 1000, 0.75, "sibling")]
    assert [p.label for p in listed_points(own, models)] == ["a", "me/self"]
    unmeasured = own_results(ckpt)
    assert listed_points(unmeasured, models) == []


def test_registry_points_read_the_registrys_index(home, ckpt, tmp_path):
    from zoo import registry
    from zoo.siblings import registry_points

    registry.upload(measured(ckpt, tmp_path / "listed", 0.7), "zoo:tiny/rt/listed")
    registry.upload(measured(ckpt, tmp_path / "sst2", 0.7, dataset="sst2"), "zoo:tiny/sst2/listed")
    own = own_results(measured(ckpt, tmp_path / "own", 0.85))
    size = Checkpoint.open(ckpt).manifest.sizes.checkpoint_nbytes
    assert registry_points(own) == [Point("tiny/rt/listed", size, 0.7, "sibling")]
    assert registry_points(own, exclude="tiny/rt/listed") == []


def test_stage_upload_links_the_files_and_writes_its_own_card(ckpt, tmp_path):
    from zoo.registry import stage_upload

    before = {p.name: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    source = measured(ckpt, tmp_path / "m", 0.8)
    siblings = [Point("tiny/rt/other", 1000, 0.7, "sibling")]
    staged = stage_upload(source, tmp_path / "stage", card_name="zoo:tiny/rt/m", siblings=siblings)
    assert staged.path == tmp_path / "stage" / "m" and staged.siblings == siblings
    files = [p for p in source.rglob("*") if p.is_file()]
    assert (staged.linked, staged.copied) == (len(files), 0)
    assert (staged.path / "model.safetensors").stat().st_ino == (source / "model.safetensors").stat().st_ino
    card = ModelCard.load(staged.card.readme)
    assert staged.card.readme == staged.path / "README.md" and card.data.model_name == "zoo:tiny/rt/m"
    assert staged.card.plot is not None and staged.card.has_results  # measured: plotted beside its sibling
    assert (source / "README.md").stat().st_ino != staged.card.readme.stat().st_ino  # replaced, not written through
    assert "zoo:tiny/rt/m" not in (source / "README.md").read_text()
    assert {p.name: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()} == before


def test_stage_upload_copies_where_hard_links_are_refused(ckpt, tmp_path, monkeypatch):
    from zoo.registry import stage_upload

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("os.link", no_link)
    staged = stage_upload(ckpt, tmp_path, card_name="zoo:tiny/x")
    assert staged.linked == 0 and staged.copied == len([p for p in ckpt.rglob("*") if p.is_file()])
    assert (staged.path / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()


def test_staged_upload_is_removed_afterwards_and_reads_no_registry_for_an_unmeasured_model(home, ckpt):
    from zoo.registry import staged_upload

    with staged_upload(ckpt, "zoo:tiny/x/int8", registry="no-such-registry") as staged:
        assert staged.siblings == [] and (staged.path / "config.json").is_file()
        assert 'from_pretrained("zoo:tiny/x/int8")' in staged.card.readme.read_text()
    assert not staged.path.exists()
    with staged_upload(ckpt, "owner/repo") as staged:  # a Hub repo id is named as it is
        assert 'from_pretrained("owner/repo")' in staged.card.readme.read_text()
