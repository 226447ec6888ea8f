"""Model cards: written on compress, parsed back by huggingface_hub, every number equal to the manifest's.

Checkpoints with results come from real (tiny) fine-tuning runs in tests/zoo/test_cli.py and, marked slow,
from the real all-MiniLM-L6-v2 here; the unit tests below also give a compressed tiny BERT an evaluation
list by editing its manifest, to check formatting without training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from zoo.cards import PLOT, README, Point, build_card, layer_rows, results, write_card
from zoo.formats import Checkpoint

from tests.conftest import DATA

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(card: ModelCard) -> dict[tuple[str, str], float]:
    return {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}


def assert_card_matches_manifest(directory: Path) -> ModelCard:
    """The card's model-index holds exactly the manifest's results and ratios; the plot exists and is linked."""
    manifest = Checkpoint.open(directory).manifest
    card = ModelCard.load(directory / README)
    got = _metrics(card)
    for r in manifest.evaluation:
        key = (r.split, r.metric if r.role == "compressed" else f"teacher_{r.metric}")
        assert got[key] == pytest.approx(r.value, abs=0), key
    head = results(manifest)
    assert got[(head.split, "compression_ratio")] == manifest.sizes.checkpoint_ratio
    assert got[(head.split, "encoder_linear_compression_ratio")] == manifest.sizes.encoder_linear_ratio
    assert got[(head.split, "retention")] == pytest.approx(
        head.row("compressed").value / head.row("teacher").value, abs=1e-6
    )
    assert f"]({PLOT})" in card.text
    assert (directory / PLOT).read_bytes().startswith(PNG)
    assert card.data.base_model_relation == "quantized" and card.data.library_name == "transformers"
    assert "zoo" in card.data.tags and f"zoo-recipe-{manifest.recipe.name}" in card.data.tags
    return card


@pytest.fixture
def compressed(compressed_models, tiny_bert_dir, tmp_path) -> Path:
    """A private copy of a compressed tiny BERT (tests edit it)."""
    src = compressed_models.path(tiny_bert_dir, "4bit-2of4")
    return Path(shutil.copytree(src, tmp_path / "m"))


def _with_evaluation(directory: Path, teacher: float, student: float) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    q = config["quantization_config"]
    q["evaluation"] = [
        {
            "role": role,
            "task": "rotten_tomatoes",
            "dataset": "rotten_tomatoes",
            "split": split,
            "metric": "accuracy",
            "value": value,
            "n_examples": 1200,
        }
        for split in ("validation", "test")
        for role, value in (("teacher", teacher), ("compressed", student))
    ] + [
        {
            "role": "compressed",
            "task": "rotten_tomatoes",
            "dataset": "rotten_tomatoes",
            "split": "test",
            "metric": "teacher_agreement",
            "value": 0.9,
            "n_examples": 1200,
        }
    ]
    path.write_text(json.dumps(config))


def test_compress_writes_a_card_that_says_nothing_was_measured(compressed):
    card = ModelCard.load(compressed / README)
    assert card.data.eval_results is None and "model-index" not in card.content
    assert "No accuracy was measured" in card.text
    assert not (compressed / PLOT).exists() and not (compressed / ".eval_results").exists()
    manifest = Checkpoint.open(compressed).manifest  # the card is not part of the verified files
    assert README not in manifest.files
    # the per-layer table lists every module with its stored bytes, read from the manifest
    for row in layer_rows(manifest):
        assert (
            f"| `{row.module}` | {row.method} | {row.bits:.3g} | {100 * row.sparsity:.0f}% | {row.nbytes:,} |"
            in card.text
        )
    assert {(r.bits, r.sparsity) for r in layer_rows(manifest) if r.method.startswith("2:4")} == {(4, 0.5)}
    # the headline is the whole checkpoint's ratio, in the first sentence
    first = card.text.strip().split("\n\n")[1]
    assert f"{manifest.sizes.checkpoint_ratio:.2f}x smaller than the dense model's" in first
    assert f"{manifest.sizes.encoder_linear_ratio:.2f}x" in card.text


def test_card_with_results_parses_back_with_the_manifest_numbers(compressed):
    _with_evaluation(compressed, teacher=0.8333, student=0.8208)
    files = write_card(compressed, name="me/tiny-4bit-2of4", siblings=[Point("int8", 59_000_000, 0.83, "sibling")])
    assert files.plot == compressed / PLOT
    card = assert_card_matches_manifest(compressed)
    assert card.data.model_name == "me/tiny-4bit-2of4"
    assert 'from_pretrained("me/tiny-4bit-2of4")' in card.text and "import zoo" in card.text
    assert "| 83.33% | 100.00% |" in card.text and "| 82.08% | 98.50% |" in card.text
    assert "agrees with the dense teacher on 90.00%" in card.text
    # the recipe's YAML is in the card, and it is the manifest's
    assert "```yaml\nname: 4bit-2of4\n" in card.text
    eval_yaml = (files.eval_results).read_text()
    assert "id: rotten_tomatoes" in eval_yaml and "value: 0.8208" in eval_yaml


def test_card_follows_the_manifest_when_results_change_and_drops_stale_files(compressed):
    _with_evaluation(compressed, teacher=0.80, student=0.70)
    write_card(compressed)
    assert _metrics(ModelCard.load(compressed / README))[("test", "accuracy")] == 0.70
    _with_evaluation(compressed, teacher=0.80, student=0.78)
    write_card(compressed)
    assert _metrics(ModelCard.load(compressed / README))[("test", "accuracy")] == 0.78
    # results removed again: no plot, no eval-results file, no invented numbers
    config = json.loads((compressed / "config.json").read_text())
    config["quantization_config"]["evaluation"] = []
    (compressed / "config.json").write_text(json.dumps(config))
    write_card(compressed)
    assert not (compressed / PLOT).exists() and not (compressed / ".eval_results").exists()
    assert "No accuracy was measured" in (compressed / README).read_text()


def test_card_without_matplotlib_says_so(compressed, monkeypatch):
    from zoo.cards import card

    _with_evaluation(compressed, teacher=0.8, student=0.79)
    monkeypatch.setattr(card, "have_matplotlib", lambda: False)
    files = write_card(compressed)
    assert files.plot is None and "No plot: matplotlib is not installed" in files.readme.read_text()


def test_card_is_deterministic(compressed):
    _with_evaluation(compressed, teacher=0.8, student=0.79)
    first = write_card(compressed)
    readme, plot = first.readme.read_bytes(), first.plot.read_bytes()
    again = write_card(compressed)
    assert again.readme.read_bytes() == readme and again.plot.read_bytes() == plot


def test_hub_base_model_only_when_it_is_a_hub_id(compressed):
    assert build_card(compressed).data.base_model is None  # compressed from a local directory


def test_zoo_card_and_info_commands(run_cli, compressed, compressed_models, tiny_bert_dir, tmp_path):
    _with_evaluation(compressed, teacher=0.8, student=0.79)
    sibling = Path(shutil.copytree(compressed_models.path(tiny_bert_dir, "int8"), tmp_path / "sib"))
    _with_evaluation(sibling, teacher=0.8, student=0.8)
    unmeasured = compressed_models.path(tiny_bert_dir, "binary")
    result = run_cli("card", compressed, "--sibling", sibling, "--sibling", unmeasured)
    assert result.exit_code == 0, result.stderr
    assert "README.md, card/accuracy_vs_size.png, .eval_results/rotten_tomatoes.yaml" in result.stdout
    assert "has no recorded accuracy; not plotted" in result.stderr
    info = run_cli("info", compressed)
    assert "79.00%" in info.stdout and "98.75%" in info.stdout  # accuracy and retention, as in the card
    facts = json.loads(run_cli("info", compressed, "--json").stdout)
    assert facts["results"]["measured"] and facts["results"]["rows"][1]["value"] == 0.79
    assert len(facts["layers"]) == len(facts["manifest"]["modules"])
    bad = run_cli("card", tmp_path / "nope")
    assert bad.exit_code == 1 and "error:" in bad.stderr


@pytest.mark.slow
def test_card_of_a_really_trained_minilm(run_cli, tmp_path):
    """The acceptance: a real compressed MiniLM, fine-tuned and measured (on a small seeded subset, to fit a
    test run); its card's model-index equals the manifest's measured accuracy and ratio."""
    out = tmp_path / "minilm-int8-rt"
    result = run_cli(
        "compress",
        "minilm",
        "--recipe",
        "int8",
        "--task",
        "rotten_tomatoes",
        "--data",
        DATA / "rotten_tomatoes",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--teacher-epochs",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    card = assert_card_matches_manifest(out)
    assert card.data.model_name == "minilm-int8-rt"
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # packaged copy of a hub model


def test_upload_regenerates_the_card_and_registry_siblings_are_plotted(
    run_cli, compressed, compressed_models, tiny_bert_dir, tmp_path, monkeypatch
):
    """A card plots the measured models of its registry; `zoo upload --card` publishes a card that names the stub
    people load it by (without touching the directory); `zoo info` takes a registry name."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_REGISTRY", raising=False)
    sibling = Path(shutil.copytree(compressed_models.path(tiny_bert_dir, "int8"), tmp_path / "sib"))
    _with_evaluation(sibling, teacher=0.8, student=0.8)
    other_split = Path(shutil.copytree(compressed_models.path(tiny_bert_dir, "binary"), tmp_path / "other"))
    _with_evaluation(other_split, teacher=0.8, student=0.5)
    config = json.loads((other_split / "config.json").read_text())
    for r in config["quantization_config"]["evaluation"]:
        r["dataset"] = "sst2"
    (other_split / "config.json").write_text(json.dumps(config))
    before = (sibling / README).read_bytes()
    for path, stub in ((sibling, "zoo:tiny/rt/int8"), (other_split, "zoo:tiny/sst2/binary")):
        assert run_cli("upload", path, stub, "--card").exit_code == 0
    assert (sibling / README).read_bytes() == before  # the upload never modifies the directory it uploads
    published = Path(run_cli("pull", "zoo:tiny/rt/int8").stdout.strip())
    assert "name: zoo:tiny/rt/int8" in (published / README).read_text()  # its published card names the stub

    _with_evaluation(compressed, teacher=0.8, student=0.79)
    result = run_cli("card", compressed, "--registry", "local")
    assert result.exit_code == 0, result.stderr
    assert "plotted beside its teacher and 1 other model(s): tiny/rt/int8" in result.stdout  # sst2's is not

    uploaded = run_cli("upload", compressed, "zoo:tiny/rt/4bit-2of4", "--card")
    assert uploaded.exit_code == 0, uploaded.stderr
    pulled = Path(run_cli("pull", "zoo:tiny/rt/4bit-2of4").stdout.strip())
    card = ModelCard.load(pulled / README)
    assert card.data.model_name == "zoo:tiny/rt/4bit-2of4" and 'from_pretrained("zoo:tiny/rt/4bit-2of4")' in card.text
    assert_card_matches_manifest(pulled)  # the plot travelled with the card
    kept = run_cli("upload", compressed, "zoo:tiny/rt/as-is")  # by default the files go as they are
    assert kept.exit_code == 0, kept.stderr
    as_is = Path(run_cli("pull", "zoo:tiny/rt/as-is").stdout.strip())
    assert (as_is / README).read_bytes() == (compressed / README).read_bytes()
    info = run_cli("info", "zoo:tiny/rt/4bit-2of4")
    assert info.exit_code == 0 and "79.00%" in info.stdout
    missing = run_cli("info", "zoo:tiny/rt/int4")
    assert missing.exit_code == 1 and "tiny/rt/int8" in missing.stderr  # close matches, one line


def test_checkpoint_facts_are_what_zoo_info_shows(compressed):
    from zoo.cards import checkpoint_facts, loads_as, rounding

    _with_evaluation(compressed, teacher=0.8, student=0.79)
    facts = checkpoint_facts(compressed)
    ckpt = Checkpoint.open(compressed)
    m = ckpt.manifest
    assert facts.path == compressed and facts.manifest == m and facts.description == m.recipe.spec["description"]
    assert facts.results.metric == "accuracy" and facts.results.row("compressed").value == 0.79
    assert facts.layers == layer_rows(m) and facts.other_tensors_nbytes > 0
    assert facts.loads_as == loads_as(m, ckpt.config) is None  # a base model, loaded as the class config.json names
    assert facts.rounding == rounding(m) and facts.rounding.gptq  # 4bit-2of4 rounds with GPTQ
    shown = json.loads(json.dumps(facts.to_json()))
    assert list(shown) == ["path", "results", "layers", "manifest"] and shown["path"] == str(compressed)
    assert shown["results"]["measured"] and "extra" not in shown["results"]
    assert shown["results"]["rows"][1] == {**shown["results"]["rows"][1], "role": "compressed", "value": 0.79}
    assert len(shown["layers"]) == len(m.modules) and shown["manifest"]["recipe"]["name"] == "4bit-2of4"
    with pytest.raises(Exception, match="sha256|does not match|changed"):  # verified first
        (compressed / "vocab.txt").write_text("edited")
        checkpoint_facts(compressed)


def test_loads_as_and_rounding_read_the_manifest(compressed):
    from zoo.cards import LoadsAs, Rounding, loads_as, rounding
    from zoo.formats.manifest import TrainingRecord

    m = Checkpoint.open(compressed).manifest
    classifier = {"architectures": ["BertForSequenceClassification"]}
    assert loads_as(
        m.model_copy(update={"base_model": m.base_model.model_copy(update={"architecture": "BertModel"})}), classifier
    ) == LoadsAs("BertModel", "BertForSequenceClassification")
    assert loads_as(m, {}) is None

    def spec(gptq):
        return m.model_copy(update={"recipe": m.recipe.model_copy(update={"spec": {"gptq": gptq}})})

    assert rounding(spec({"calibrated_on": "32 texts of x.txt"})) == Rounding(True, "32 texts of x.txt")
    assert rounding(spec({"calibrated_on": "not used: no tokenizer"})) == Rounding(False, "not used: no tokenizer")
    assert rounding(spec("free-form")) is None and rounding(spec({})) is None
    trained = spec({"calibrated_on": "x"}).model_copy(update={"training": TrainingRecord.model_construct()})
    assert rounding(trained) is None  # trained weights were not rounded after the fact
