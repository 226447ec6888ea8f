"""A post-training compress says how good its result is: fidelity to the dense model, measured on held-out
built-in sentences, printed beside the size, recorded in the manifest and the card, with a warning and the
fine-tuning command below the floor. Recipes that only work trained are refused without --task."""

from __future__ import annotations

import pytest
from zoo.formats import FIDELITY_FLOOR, Checkpoint

from tests.zoo.test_cli import assert_one_line_error


def test_dense_against_itself_is_cosine_one(minilm_dir):
    from zoo.tasks.fidelity import embedding_fidelity

    record = embedding_fidelity(minilm_dir, minilm_dir)
    assert record.value == pytest.approx(1.0, abs=1e-5) and record.n_examples == 48


def test_held_out_sentences_are_not_calibration_text():
    from zoo.tasks.fidelity import sample_texts

    held_out, calibration = sample_texts("fidelity.txt"), sample_texts()
    assert len(held_out) == 48 and not set(held_out) & set(calibration)


@pytest.mark.slow
def test_a_faithful_compress_reports_fidelity_without_warning(run_cli, minilm_dir, tmp_path):
    result = run_cli("compress", minilm_dir, "--recipe", "int8", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    assert "fidelity        cosine 0.99" in result.stdout and "warning" not in result.stderr
    fidelity = Checkpoint.open(tmp_path / "m").manifest.fidelity
    assert fidelity.value > 0.99 and fidelity.faithful and fidelity.measured_on == "48 held-out built-in sentences"
    assert f"mean cosine of {fidelity.value:.4f}" in (tmp_path / "m" / "README.md").read_text()
    assert "fidelity        cosine 0.99" in run_cli("info", tmp_path / "m").stdout


@pytest.mark.slow
def test_an_unfaithful_compress_warns_and_gives_the_fine_tuning_command(run_cli, minilm_dir, tmp_path):
    result = run_cli("compress", minilm_dir, "--recipe", "2of4", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    fidelity = Checkpoint.open(tmp_path / "m").manifest.fidelity
    assert fidelity.value < FIDELITY_FLOOR
    warning = " ".join(result.stderr.split())
    assert f"warning: cosine {fidelity.value:.4f} to the dense model is below {FIDELITY_FLOOR}" in warning
    assert f"zoo compress {minilm_dir} --recipe 2of4 --task TASK --data DIR" in warning
    assert f"below {FIDELITY_FLOOR}: fine-tune it on your task" in (tmp_path / "m" / "README.md").read_text()


def test_a_model_that_reads_no_text_says_fidelity_was_not_measured(run_cli, tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128
    )
    ViTModel(config).save_pretrained(tmp_path / "vit")
    result = run_cli("compress", tmp_path / "vit", "--recipe", "int8", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    assert "fidelity        not measured: the model reads no text" in result.stdout
    assert Checkpoint.open(tmp_path / "m").manifest.fidelity is None


@pytest.mark.parametrize("recipe", ["kron-8x", "kron-19x"])
def test_recipes_that_need_training_are_refused_post_training_unless_allowed(run_cli, tiny_bert_dir, tmp_path, recipe):
    assert_one_line_error(
        run_cli("compress", tiny_bert_dir, "--recipe", recipe, "--out", tmp_path / "a"),
        f"recipe {recipe} makes a usable model only with fine-tuning",
        "--allow-untrained",
    )
    assert not (tmp_path / "a").exists()
    result = run_cli("compress", tiny_bert_dir, "--recipe", recipe, "--out", tmp_path / "b", "--allow-untrained")
    assert result.exit_code == 0, result.stderr
    assert "fidelity        cosine" in result.stdout


def test_allow_untrained_with_task_is_refused(run_cli, tiny_bert_dir, tmp_path):
    assert_one_line_error(
        run_cli(
            "compress",
            tiny_bert_dir,
            "--recipe",
            "kron-8x",
            "--task",
            "rotten_tomatoes",
            "--allow-untrained",
            "--out",
            tmp_path / "a",
        ),
        "--allow-untrained applies to post-training",
    )
