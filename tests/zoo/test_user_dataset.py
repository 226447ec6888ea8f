"""Fine-tuning on a user's own dataset: one token length from the teacher to the student and every score,
progress lines in logs, and the user's names for the task and the labels kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from zoo.formats import Checkpoint

from tests.conftest import DATA, REPO

RT = DATA / "rotten_tomatoes"


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    """A user's dataset the way users name things: a folder called `data` inside the project's folder, a
    dataset card naming it, integer labels with their names in labels.txt."""
    root = tmp_path_factory.mktemp("user") / "news-topics" / "data"
    root.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        shutil.copy(RT / f"{split}.tsv", root / f"{split}.tsv")
    return root


@pytest.fixture(scope="module")
def teacher_32(tiny_bert_dir, news, tmp_path_factory):
    from typer.testing import CliRunner

    from zoo.cli import app

    out = tmp_path_factory.mktemp("t32") / "teacher"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tiny_bert_dir),
            "--task",
            "text-classification",
            "--data",
            str(news),
            "--out",
            str(out),
            "--limit",
            "64",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--max-length",
            "32",
            "--label-names",
            "rotten,fresh",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "at 32 tokens per example" in result.stdout
    return out


@pytest.mark.slow
def test_the_teachers_length_carries_through_compress_and_eval(run_cli, teacher_32, news, tmp_path):
    out = tmp_path / "student"
    result = run_cli(
        "compress",
        teacher_32,
        "--recipe",
        "int8",
        "--task",
        "text-classification",
        "--data",
        news,
        "--limit",
        "64",
        "--epochs",
        "1",
        "--out",
        out,
    )  # no --max-length
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "examples, 32 tokens each)" in result.stdout
    m = Checkpoint.open(out).manifest
    assert m.training.max_length == 32 and m.recipe.spec["training"]["max_length"] == 32
    assert "32 tokens per example" in (out / "README.md").read_text()
    evaluated = json.loads(
        run_cli("eval", out, "--task", "text-classification", "--data", news, "--limit", "64", "--json").stdout
    )
    assert evaluated["max_length"] == 32  # scored at the length it was trained with
    teacher_eval = json.loads(
        run_cli("eval", teacher_32, "--task", "text-classification", "--data", news, "--limit", "64", "--json").stdout
    )
    assert teacher_eval["max_length"] == 32
    told = run_cli(
        "compress",
        teacher_32,
        "--recipe",
        "int8",
        "--task",
        "text-classification",
        "--data",
        news,
        "--limit",
        "64",
        "--epochs",
        "1",
        "--max-length",
        "24",
        "--out",
        tmp_path / "s24",
    )
    assert told.exit_code == 0 and Checkpoint.open(tmp_path / "s24").manifest.training.max_length == 24


def test_the_users_names_reach_config_manifest_and_card(run_cli, teacher_32, news, tmp_path):
    assert json.loads((teacher_32 / "config.json").read_text())["id2label"] == {"0": "rotten", "1": "fresh"}
    out = tmp_path / "named"
    result = run_cli(
        "compress",
        teacher_32,
        "--recipe",
        "int8",
        "--task",
        "text-classification",
        "--data",
        news,
        "--limit",
        "64",
        "--epochs",
        "1",
        "--task-name",
        "Movie reviews (ours)",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    m = Checkpoint.open(out).manifest
    assert m.training.dataset == "Movie reviews (ours)" and m.training.labels == ["rotten", "fresh"]
    assert {r.dataset for r in m.evaluation} == {"Movie reviews (ours)"}
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "rotten", "1": "fresh"}
    card = (out / "README.md").read_text()
    assert "Movie reviews (ours)" in card and "`rotten`, `fresh`" in card


def test_label_names_given_to_compress_name_a_numbered_teachers_labels(run_cli, tiny_bert_dir, news, tmp_path):
    teacher = tmp_path / "numbered"
    assert (
        run_cli(
            "finetune",
            tiny_bert_dir,
            "--task",
            "text-classification",
            "--data",
            news,
            "--out",
            teacher,
            "--limit",
            "64",
            "--epochs",
            "1",
        ).exit_code
        == 0
    )
    assert json.loads((teacher / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
    out = tmp_path / "named"
    result = run_cli(
        "compress",
        teacher,
        "--recipe",
        "int8",
        "--task",
        "text-classification",
        "--data",
        news,
        "--limit",
        "64",
        "--epochs",
        "1",
        "--label-names",
        "neg,pos",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    assert Checkpoint.open(out).manifest.training.labels == ["neg", "pos"]


def test_default_names_are_meaningful(news, tmp_path):
    from zoo.tasks import TaskError, get_task

    assert get_task("text-classification", str(news)).dataset == "news-topics"  # not "data"
    (tmp_path / "labelled").mkdir()
    for split in ("train", "validation", "test"):
        shutil.copy(RT / f"{split}.tsv", tmp_path / "labelled" / f"{split}.tsv")
    (tmp_path / "labelled" / "labels.txt").write_text("negative\npositive\n")
    (tmp_path / "labelled" / "README.md").write_text("---\npretty_name: Rotten Tomatoes, our copy\n---\n# Data\n")
    task = get_task("text-classification", str(tmp_path / "labelled"))
    assert task.dataset == "Rotten Tomatoes, our copy"
    task.examples("train")
    assert task.label_names == ["negative", "positive"]
    with pytest.raises(TaskError, match="3 label names"):
        get_task("text-classification", str(news), label_names=["a", "b", "c"]).examples("train")


@pytest.mark.slow
def test_compress_logs_progress_lines_when_stderr_is_a_file(tiny_bert_dir, news, tmp_path):
    log = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZOO_LOG_EVERY": "0"}
    with log.open("w") as stderr:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "zoo",
                "compress",
                str(tiny_bert_dir),
                "--recipe",
                "int8",
                "--task",
                "text-classification",
                "--data",
                str(news),
                "--limit",
                "160",
                "--epochs",
                "1",
                "--teacher-epochs",
                "1",
                "--out",
                str(tmp_path / "out"),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
    lines = log.read_text().splitlines()
    assert done.returncode == 0, "\n".join(lines[-20:])
    for stage in ("fine-tuning teacher", "training int8"):
        steps = [line for line in lines if line.startswith(f"{stage}: step ")]
        assert len(steps) >= 2 and "elapsed" in steps[0] and "epoch" in steps[0], lines
        assert any(line.startswith(f"{stage}: validation accuracy") for line in lines)
    assert any(line.startswith("evaluating on news-topics test: batch 1/3, ") for line in lines), lines
    assert "\x1b[" not in log.read_text()  # plain lines: no bar, no colour codes
