"""Structure-changing compression on a tiny BERT: Kronecker factors trained and stored as trained,
block pruning that removes heads and FFN neurons physically, and the bad inputs that must fail
before any training starts."""

import copy
import json

import pytest
import torch
from zoo.formats import Checkpoint
from zoo.formats.spec import IntSpec, KroneckerSpec
from zoo.loaders.structure import StructureError, layer_list, resize, structure_of

import zoo
from tests.conftest import leftovers
from tests.zoo.test_train import RT, recipe_with, task, teacher_dir  # noqa: F401 (fixtures)
from zoo.errors import RecipeError
from zoo.methods.prune import Pruner, cubic
from zoo.recipes import parse_recipe
from zoo.recipes.pruning import PruningSpec
from zoo.resolve import resolve_model
from zoo.tasks import evaluate
from zoo.train.finetune import load_for_task
from zoo.train.pipeline import compress_with_training

IDS = torch.tensor([[101, 7592, 2088, 2003, 2307, 102], [101, 2023, 3185, 2001, 6659, 102]])


def compress_on_task(run_cli, model, tmp_path, recipe_yaml: str, *extra: str):
    """`zoo compress MODEL --recipe YAML --task rotten_tomatoes` into tmp_path/out; the CLI's result."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_yaml)
    return run_cli(
        "compress",
        model,
        "--recipe",
        recipe,
        "--task",
        "rotten_tomatoes",
        "--data",
        RT,
        *extra,
        "--out",
        tmp_path / "out",
    )


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def kron_student(teacher_dir, task, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("kron") / "tiny-kron"
    recipe = recipe_with("kron-8x", epochs=1, learning_rate=1e-3)
    return compress_with_training(resolve_model(str(teacher_dir)), recipe, task, out, limit=64)


@pytest.mark.slow
def test_kronecker_student_stores_int8_factors_of_every_targeted_layer(kron_student):
    manifest = Checkpoint.open(kron_student.path).manifest
    emb = manifest.modules["bert.embeddings.word_embeddings"]
    assert isinstance(emb.codec, KroneckerSpec) and emb.codec.b_shape == (1, 64) and emb.codec.rank == 12
    linears = {n: e for n, e in manifest.modules.items() if e.encoder_linear}
    assert len(linears) == 12 and all(isinstance(e.codec, KroneckerSpec) for e in linears.values())
    assert {e.codec.rank for e in linears.values()} == {3} and {e.codec.b_shape for e in linears.values()} == {(2, 2)}
    kron = [e for e in manifest.modules.values() if isinstance(e.codec, KroneckerSpec)]
    assert all(isinstance(e.codec.factors, IntSpec) and e.codec.factors.bits == 8 for e in kron)
    assert manifest.modules["bert.pooler.dense"].codec == IntSpec(bits=8)
    # 3/4 of the parameters (rank 3, B 2x2), int8 with a scale per 64: about 5x smaller than fp32
    assert manifest.sizes.encoder_linear_ratio > 5
    assert manifest.sizes.checkpoint_ratio > 5


def test_kronecker_student_is_evaluated_as_stored_in_every_mode(kron_student, task):  # noqa: F811
    recorded = next(r for r in kron_student.manifest.evaluation if (r.role, r.split) == ("compressed", "test"))
    outputs = []
    for mode in ("materialize", "packed", "kernel"):
        model = zoo.from_pretrained(kron_student.path, mode=mode)
        outputs.append(logits(model))
        if mode == "materialize":
            score, _ = evaluate(model, task, kron_student.path, "test", limit=64, max_length=64)
            assert score.value == pytest.approx(recorded.value, abs=1e-6)
    assert torch.allclose(outputs[1], outputs[0], atol=1e-4)  # packed decodes the same factors every time
    # kernel: the same Kronecker products, but the int8 pooler runs int8 x int8 (activations quantized too)
    assert torch.allclose(outputs[2], outputs[0], atol=5e-2)


def test_kronecker_factors_that_do_not_divide_fail_before_the_teacher_is_trained(tiny_bert_dir, tmp_path, run_cli):
    result = compress_on_task(
        run_cli,
        tiny_bert_dir,
        tmp_path,
        "name: k\ndescription: x\nrules: [{codec: {codec: kronecker, b_shape: [3, 3]}}]\n",
    )
    out = tmp_path / "out"
    assert result.exit_code == 1
    assert "does not divide the weight 64x64" in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "out.work").exists() and not leftovers(tmp_path)


def test_kronecker_ratio_no_split_reaches_fails_before_the_teacher_is_trained(tiny_bert_dir, tmp_path, run_cli):
    result = compress_on_task(
        run_cli,
        tiny_bert_dir,
        tmp_path,
        "name: k\ndescription: x\nrules: [{codec: {codec: kronecker, ratio: 3000, rank: 2}}]\n",
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no Kronecker factor shapes of rank 2 store a 64x64 weight 3000x smaller" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists() and not leftovers(tmp_path)


def test_cubic_schedule():
    assert cubic(0.05, 0.1, 0.7) == 0 and cubic(0.7, 0.1, 0.7) == 1 and cubic(1.0, 0.1, 0.7) == 1
    assert 0.5 < cubic(0.3, 0.1, 0.7) < 1  # fast early, slow late


def test_removing_closed_blocks_changes_no_output(teacher_dir, task):  # noqa: F811
    model = load_for_task(teacher_dir, task).eval()
    spec = PruningSpec(heads=0.5, ffn=0.5, ffn_block=32)
    pruner = Pruner(model, spec)
    torch.manual_seed(0)
    for scores in (*pruner.scores["heads"], *pruner.scores["ffn"]):
        scores.copy_(torch.randn(len(scores)))
    pruner.update(1.0)
    gated = logits(model)
    before = sum(p.numel() for p in model.parameters())
    from zoo.methods import export

    export(model)
    structure = pruner.remove(model)
    assert sum(structure.attention_heads) == 2 and all(h >= 1 for h in structure.attention_heads)
    assert sum(structure.intermediate_sizes) == 2 * 160 - round(0.5 * 10) * 32
    assert structure_of(model) == (structure.attention_heads, structure.intermediate_sizes)
    assert sum(p.numel() for p in model.parameters()) < before
    assert torch.allclose(logits(model), gated, atol=1e-5)


def test_movement_scores_follow_the_gate_gradient(teacher_dir, task):  # noqa: F811
    model = load_for_task(teacher_dir, task)
    pruner = Pruner(model, PruningSpec(heads=0.5))
    out = model(input_ids=IDS, labels=torch.tensor([0, 1]))
    out.loss.backward()
    grads = [g.gate.grad.clone() for g in pruner.head_gates]
    pruner.accumulate()
    assert all(torch.equal(s, -g) for s, g in zip(pruner.scores["heads"], grads, strict=True))
    assert all(g.gate.grad is None for g in pruner.head_gates)


@pytest.fixture(scope="module")
def pruned_student(teacher_dir, task, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("pruned") / "tiny-pruned"
    recipe = recipe_with("block-prune", epochs=2, learning_rate=1e-3)
    return compress_with_training(resolve_model(str(teacher_dir)), recipe, task, out, limit=64)


def test_block_pruned_student_is_smaller_and_loads_with_its_shapes(pruned_student, teacher_dir):  # noqa: F811
    manifest = Checkpoint.open(pruned_student.path).manifest
    structure = manifest.structure
    assert structure.heads_before == 2 and structure.intermediate_size_before == 160
    assert sum(structure.attention_heads) == 2 and sum(structure.intermediate_sizes) == 320 - 6 * 32
    assert manifest.modules == {}  # plain dense layers
    assert manifest.sizes.encoder_linear_ratio > 1.5
    config = json.loads((pruned_student.path / "config.json").read_text())
    assert config["quantization_config"]["structure"]["attention_heads"] == structure.attention_heads

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(pruned_student.path)  # plain transformers
    assert structure_of(model) == (structure.attention_heads, structure.intermediate_sizes)
    _, layers = layer_list(model)
    assert all(type(m) is torch.nn.Linear for layer in layers for m in layer.modules() if "Linear" in type(m).__name__)
    for mode in ("packed", "kernel"):  # nothing compressed: every mode is the same dense model
        assert torch.allclose(logits(zoo.from_pretrained(pruned_student.path, mode=mode)), logits(model), atol=1e-6)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_info_and_card_describe_the_pruned_structure(pruned_student, run_cli):
    result = run_cli("info", pruned_student.path)
    assert result.exit_code == 0, result.output
    assert "pruned          heads per layer [1, 1] (of 2)" in result.output
    card = (pruned_student.path / "README.md").read_text()
    assert "Block movement pruning removed whole attention heads and FFN neurons" in card


def test_unpacking_a_pruned_model_pads_it_back_to_a_plain_checkpoint(pruned_student, tmp_path):
    from transformers import AutoModelForSequenceClassification
    from zoo.loaders.unpack import unpack

    dense = unpack(pruned_student.path, tmp_path / "dense")
    assert "quantization_config" not in json.loads((dense / "config.json").read_text())
    plain = AutoModelForSequenceClassification.from_pretrained(dense)
    assert structure_of(plain) == ([2, 2], [160, 160])
    pruned = zoo.from_pretrained(pruned_student.path)
    assert torch.allclose(logits(plain), logits(pruned), atol=1e-5)


def test_ffn_block_that_does_not_tile_fails_before_the_teacher_is_trained(tiny_bert_dir, tmp_path, run_cli):
    result = compress_on_task(
        run_cli, tiny_bert_dir, tmp_path, "name: p\ndescription: x\npruning: {heads: 0.5, ffn: 0.5, ffn_block: 48}\n"
    )
    out = tmp_path / "out"
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "48 FFN neurons does not tile layer 0's FFN width 160" in result.output
    assert not out.exists() and not (tmp_path / "out.work").exists()


@pytest.mark.parametrize(
    "pruning, message",
    [
        ("{heads: 0.9}", "leaves fewer than one per layer"),
        ("{heads: 0, ffn: 0}", "pruning needs heads > 0 or ffn > 0"),
        ("{heads: 0.5, ramp: [0.5, 0.2]}", "ramp must be"),
    ],
)
def test_bad_pruning_sections_are_recipe_errors(tiny_bert_dir, tmp_path, run_cli, pruning, message):
    result = compress_on_task(run_cli, tiny_bert_dir, tmp_path, f"name: p\ndescription: x\npruning: {pruning}\n")
    assert result.exit_code == 1 and message in result.output and not (tmp_path / "out").exists()


def test_pruning_needs_a_task_and_no_codecs_inside_the_layers(tiny_bert_dir, tmp_path, run_cli):
    result = run_cli("compress", tiny_bert_dir, "--recipe", "block-prune", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "run it with --task" in result.output and not (tmp_path / "out").exists()
    result = compress_on_task(
        run_cli,
        tiny_bert_dir,
        tmp_path,
        "name: p\ndescription: x\npruning: {heads: 0.5}\nrules: [{codec: {codec: int, bits: 8}}]\n",
    )
    assert result.exit_code == 1 and "cannot also get codecs" in result.output


def test_resize_refuses_an_empty_layer_and_unknown_layouts(teacher_dir, task):  # noqa: F811
    model = load_for_task(teacher_dir, task)
    _, layers = layer_list(model)
    with pytest.raises(StructureError, match="at least one attention head"):
        resize(copy.deepcopy(layers[0]), [], [0])
    with pytest.raises(StructureError, match="cannot find"):
        resize(torch.nn.Sequential(torch.nn.Linear(4, 4)), [0], [0])
    with pytest.raises(RecipeError, match="a search and pruning cannot be combined"):
        parse_recipe(
            "name: p\ndescription: x\npruning: {heads: 0.5}\nsearch: {target_ratio: 8}\n"
            "rules: [{codec: {codec: int, bits: 8}}]\n",
            "x",
        )


def _tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=8
    )
    return ViTForImageClassification(config), {"pixel_values": torch.randn(2, 3, 32, 32)}


def _tiny_wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    return Wav2Vec2Model(config), {"input_values": torch.randn(2, 4000)}


@pytest.mark.parametrize("build", [_tiny_vit, _tiny_wav2vec2], ids=["vit", "wav2vec2"])
def test_pruning_removes_blocks_exactly_in_vit_and_wav2vec2_layers(build):
    from zoo.methods import export

    torch.manual_seed(0)
    model, inputs = build()
    model.eval()
    pruner = Pruner(model, PruningSpec(heads=0.5, ffn=0.5, ffn_block=16))
    for scores in (*pruner.scores["heads"], *pruner.scores["ffn"]):
        scores.copy_(torch.randn(len(scores)))
    pruner.update(1.0)
    with torch.no_grad():
        gated = model(**inputs)[0]
    export(model)
    structure = pruner.remove(model)
    assert sum(structure.attention_heads) == 4 and sum(structure.intermediate_sizes) == 128
    with torch.no_grad():
        assert torch.allclose(model(**inputs)[0], gated, atol=1e-5)
