"""Post-training rounding with GPTQ: what it stores is a point of the codec's own grid, stored exactly; it moves
a layer's outputs on its calibration inputs less than rounding to nearest does; N:M keeps its pattern; and
`zoo compress` records what it calibrated on (or why it could not)."""

from __future__ import annotations

import json

import pytest
import torch
from zoo.formats import Checkpoint, codecs
from zoo.formats.spec import IntSpec, NMSpec

from zoo.methods.gptq import round_clipped, round_weight, serves

INT4 = IntSpec(bits=4, group_size=32)
NM = NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=16))


def layer(seed: int = 0, rows: int = 24, cols: int = 64, tokens: int = 400):
    """A weight and correlated inputs (a few strong directions, as hidden states have), with H = 2 X^T X / n."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=g) * 0.05
    mixing = torch.randn(cols, cols, generator=g) * torch.linspace(2.0, 0.05, cols)
    x = torch.randn(tokens, cols, generator=g) @ mixing
    return weight, x, 2 * x.T.double() @ x.double() / tokens


def output_error(weight: torch.Tensor, rounded: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (weight - rounded).T) ** 2).mean())


@pytest.mark.parametrize("spec", [INT4, NM, IntSpec(bits=3, group_size=None)], ids=["int4-g32", "2:4+int4", "int3-row"])
@pytest.mark.parametrize("seed", range(3))
def test_gptq_stores_a_point_of_the_grid_that_moves_the_outputs_less(spec, seed):
    weight, x, hessian = layer(seed)
    rounded = round_weight(weight, hessian, spec)
    stored = codecs.encode(rounded.weight, spec, scale=rounded.scale)
    assert torch.equal(codecs.decode(stored, spec, tuple(weight.shape)), rounded.weight)  # stored exactly
    nearest = codecs.decode(codecs.encode(weight, spec), spec, tuple(weight.shape))
    assert output_error(weight, rounded.weight, x) < 0.8 * output_error(weight, nearest, x)


def test_nm_gptq_keeps_n_of_every_m():
    weight, _, hessian = layer(1)
    rounded = round_weight(weight, hessian, NM).weight
    assert int((rounded != 0).view(weight.shape[0], -1, 4).sum(-1).max()) <= 2


def test_the_best_clip_rounds_a_table_closer_than_its_absmax_scale():
    """Embeddings have no inputs to measure: they get the best clip per group, on the same grid."""
    weight = torch.randn(50, 64) * torch.rand(50, 1)
    clipped = round_clipped(weight, INT4).weight
    nearest = codecs.decode(codecs.encode(weight, INT4), INT4, (50, 64))
    assert float(((clipped - weight) ** 2).sum()) < float(((nearest - weight) ** 2).sum())
    assert torch.equal(
        codecs.decode(codecs.encode(clipped, INT4, scale=round_clipped(weight, INT4).scale), INT4, (50, 64)), clipped
    )
    # a large table is rounded a few rows at a time; rows never affect each other, so the result is the same
    pieces = round_clipped(weight, INT4, rows=7)
    assert torch.equal(pieces.weight, clipped) and torch.equal(pieces.scale, round_clipped(weight, INT4).scale)
    assert torch.equal(round_clipped(weight, NM, rows=7).weight, round_clipped(weight, NM).weight)


def test_which_codecs_gptq_serves():
    assert serves(INT4, (8, 64)) and serves(NM, (8, 64))
    assert not serves(IntSpec(bits=4, symmetric=False), (8, 64))  # a zero point: not this grid
    assert not serves(NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=5)), (8, 64))  # a group splits N:M groups
    assert not serves(INT4, (8, 4, 4))  # not a linear layer's matrix


def _compress(run_cli, source, out, *extra):
    result = run_cli("compress", source, "--recipe", "4bit", "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return Checkpoint.open(out)


def test_compress_records_what_gptq_calibrated_on_and_stays_closer_to_the_dense_model(run_cli, tiny_bert_dir, tmp_path):
    from zoo.tasks.fidelity import embedding_cosine, sample_texts

    ckpt = _compress(run_cli, tiny_bert_dir, tmp_path / "gptq")
    calibrated = ckpt.manifest.recipe.spec["gptq"]["calibrated_on"]
    assert (
        calibrated.startswith("128 built-in sample sentences") and "13 of 16 modules rounded by GPTQ" in calibrated
    )  # + the pooler
    assert "at most 64 tokens each" in calibrated  # the recipe's 128, cut to the tiny model's 64 positions
    assert (
        "3 with no inputs to measure (3 embedding) to the best clip" in calibrated
    )  # the word, position and token-type tables
    # round to nearest, for comparison: the same recipe without its gptq section
    spec = ckpt.manifest.recipe.spec
    plain = tmp_path / "rtn.yaml"
    plain.write_text(json.dumps({k: v for k, v in spec.items() if k != "gptq"} | {"name": "rtn"}))
    rtn = tmp_path / "rtn"
    assert run_cli("compress", tiny_bert_dir, "--recipe", plain, "--out", rtn).exit_code == 0
    ours = embedding_cosine(tmp_path / "gptq", tiny_bert_dir, sample_texts())
    nearest = embedding_cosine(rtn, tiny_bert_dir, sample_texts())
    assert ours > nearest


def test_calibration_text_of_the_users_own(run_cli, tiny_bert_dir, tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("first line of my own text\n\nsecond line, about something else\n")
    ckpt = _compress(run_cli, tiny_bert_dir, tmp_path / "file", "--calibration", text)
    assert ckpt.manifest.recipe.spec["gptq"]["calibrated_on"].startswith("2 texts from mine.txt")
    from tests.conftest import DATA

    ckpt = _compress(run_cli, tiny_bert_dir, tmp_path / "dir", "--calibration", DATA / "rotten_tomatoes")
    assert ckpt.manifest.recipe.spec["gptq"]["calibrated_on"].startswith("128 texts from rotten_tomatoes train")


def test_calibration_mistakes_fail_before_any_output(run_cli, tiny_bert_dir, tmp_path):
    from tests.zoo.test_cli import assert_one_line_error

    assert_one_line_error(
        run_cli(
            "compress",
            tiny_bert_dir,
            "--recipe",
            "4bit",
            "--calibration",
            tmp_path / "nowhere.txt",
            "--out",
            tmp_path / "a",
        ),
        "does not exist",
    )
    assert_one_line_error(
        run_cli(
            "compress",
            tiny_bert_dir,
            "--recipe",
            "4bit",
            "--calibration",
            tmp_path,
            "--task",
            "rotten_tomatoes",
            "--out",
            tmp_path / "b",
        ),
        "--calibration applies to",
    )
    text = tmp_path / "texts.txt"
    text.write_text("a sentence\n")
    assert_one_line_error(
        run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--calibration", text, "--out", tmp_path / "c"),
        "--calibration has nothing to calibrate",
    )
    assert not any((tmp_path / d).exists() for d in "abc")


def test_a_model_that_reads_no_text_is_rounded_to_nearest_and_says_so(tmp_path, run_cli):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=3,
    )
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    ckpt = _compress(run_cli, tmp_path / "vit", tmp_path / "out")
    assert ckpt.manifest.recipe.spec["gptq"]["calibrated_on"] == (
        "not used: ViTForImageClassification reads pixel_values, not text; every module was rounded to nearest"
    )


def test_a_model_without_tokenizer_files_is_rounded_to_nearest_and_says_so(tmp_path, tiny_bert_dir, run_cli):
    """transformers makes an empty tokenizer (every word unknown) for such a directory: not calibration text."""
    import shutil

    shutil.copytree(tiny_bert_dir, tmp_path / "bare", ignore=shutil.ignore_patterns("*token*", "vocab*"))
    result = run_cli("compress", tmp_path / "bare", "--recipe", "4bit", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    calibrated = Checkpoint.open(tmp_path / "out").manifest.recipe.spec["gptq"]["calibrated_on"]
    assert calibrated.startswith("not used: ") and "has no tokenizer of its own" in calibrated
    assert "rounding        to nearest (GPTQ not used:" in result.stdout


def _gptq_on(model_dir, monkeypatch, chain: bool):
    from transformers import AutoModel, AutoTokenizer

    from zoo.methods import gptq as method
    from zoo.tasks.fidelity import calibration_texts

    calls = []
    real = method._inputs_match

    def check(*args):
        calls.append(args[1])
        return real(*args) if chain else False

    monkeypatch.setattr(method, "_inputs_match", check)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = calibration_texts(None, 16)[0]
    batches = [dict(tokenizer(texts[i : i + 8], padding=True, return_tensors="pt")) for i in (0, 8)]
    plan = {n: INT4 for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return method.gptq(model, plan, batches), calls


def test_chained_blocks_round_as_running_the_whole_model_does(tiny_bert_dir, monkeypatch):
    """Each block is measured on its cached inputs instead of a pass of the model up to it; checked once, on the
    first chained block, and the rounding is the same."""
    chained, calls = _gptq_on(tiny_bert_dir, monkeypatch, chain=True)
    assert calls == ["encoder.layer.1"]  # checked once (2 blocks: the second is chained)
    whole, _ = _gptq_on(tiny_bert_dir, monkeypatch, chain=False)
    assert chained.keys() == whole.keys() and len(chained) == 2 * 6 + 1  # 6 linears per block, the pooler
    for name in whole:
        assert torch.allclose(chained[name].weight, whole[name].weight, atol=1e-6), name
