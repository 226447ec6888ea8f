"""Recipes: built-ins mean what their names say, user YAML works the same, bad YAML is refused."""

from __future__ import annotations

import re

import pytest

from formats import BinarySpec, CodebookSpec, DenseSpec, IntSpec, NMSpec, TernarySpec, codecs
from zoo.errors import RecipeError
from zoo.recipes import builtin_names, builtin_text, is_encoder_linear, load_recipe

REQUIRED = {"int8", "4bit", "2of4", "4bit-2of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"}
# all-MiniLM-L6-v2's linear layers in one transformer block
MINILM_BLOCK = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]


def codec(name: str):
    (rule,) = load_recipe(name).rules
    return rule.codec


def test_required_builtins_exist():
    assert REQUIRED <= set(builtin_names())


def test_each_builtin_means_what_its_name_says():
    assert codec("int8") == IntSpec(bits=8, group_size=None, symmetric=True, zero_preserving=True)
    assert codec("4bit") == IntSpec(bits=4, group_size=128, symmetric=True, zero_preserving=True)
    assert codec("2of4") == NMSpec(n=2, m=4, values=DenseSpec(dtype="float16"))
    assert codec("4bit-2of4") == NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=128, zero_preserving=True))
    assert codec("binary") == BinarySpec(group_size=128)
    assert codec("ternary") == TernarySpec(group_size=128)
    assert isinstance(codec("kmeans-4bit"), CodebookSpec) and codec("kmeans-4bit").bits == 4
    assert isinstance(codec("kmeans-1bit"), CodebookSpec) and codec("kmeans-1bit").bits == 1


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_ratio_in_each_description_matches_the_codec(name):
    """The '~Nx' a description promises is what the codec's byte count gives on MiniLM's layers."""
    recipe = load_recipe(name)
    claimed = float(re.search(r"~(\d+(?:\.\d+)?)x", recipe.description).group(1))
    spec = recipe.rules[0].codec
    ratio = sum(4 * a * b for a, b in MINILM_BLOCK) / sum(codecs.nbytes(s, spec) for s in MINILM_BLOCK)
    assert ratio == pytest.approx(claimed, rel=0.03)


def test_builtins_target_only_block_linears():
    recipe = load_recipe("4bit")
    assert recipe.codec_for("encoder.layer.3.attention.self.query", "linear") is not None
    assert recipe.codec_for("model.encoder.layers.0.fc1", "linear") is not None  # Marian / wav2vec2
    assert recipe.codec_for("encoder.block.1.layer.0.SelfAttention.q", "linear") is not None  # T5
    assert recipe.codec_for("pooler.dense", "linear") is None
    assert recipe.codec_for("embeddings.word_embeddings", "embedding") is None
    assert recipe.codec_for("encoder.layer.0.attention.self.query", "embedding") is None
    assert recipe.codec_for("feature_extractor.conv_layers.0.conv", "conv") is None


def test_encoder_linear_classification():
    assert is_encoder_linear("encoder.layer.0.output.dense", "linear")
    assert not is_encoder_linear("pooler.dense", "linear")
    assert not is_encoder_linear("encoder.layer.0.output.LayerNorm", "other")


def test_user_yaml_works_like_a_builtin(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(builtin_text("4bit").replace("name: 4bit", "name: my-4bit"))
    assert load_recipe(path).rules == load_recipe("4bit").rules
    assert load_recipe(str(path)).name == "my-4bit"


def test_rules_apply_in_order_with_ignore_and_kinds(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        """
name: mixed
description: int8 attention, 2:4 elsewhere, embeddings 4-bit, skip layer 0
rules:
  - targets: ['attention']
    ignore: ['layer\\.0\\.']
    codec: {codec: int, bits: 8, group_size: null}
  - targets: ['layer\\.\\d+\\.']
    ignore: ['layer\\.0\\.']
    codec: {codec: nm, n: 2, m: 4}
  - targets: ['embeddings']
    kinds: [embedding]
    codec: {codec: int, bits: 4}
"""
    )
    r = load_recipe(path)
    assert r.codec_for("encoder.layer.1.attention.self.key", "linear").codec == "int"
    assert r.codec_for("encoder.layer.1.output.dense", "linear").codec == "nm"
    assert r.codec_for("encoder.layer.0.output.dense", "linear") is None
    assert r.codec_for("embeddings.word_embeddings", "embedding").bits == 4


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\ndescription: y\nrules: [{codec: {codec: int, bits: 9}}]", "bits"),
        ("name: x\ndescription: y\nrules: [{codec: {codec: nm, n: 4, m: 4}}]", "N < M"),
        ("name: x\ndescription: y\nrules: [{codec: {codec: lattice}}]", "codec"),
        ("name: x\ndescription: y\nrules: [{targets: ['(unclosed'], codec: {codec: binary}}]", "invalid regular expression"),
        ("name: x\ndescription: y\nrules: []", "rules"),
        ("name: x\ndescription: y\nrules: [{codec: {codec: binary}}]\nsurprise: 1", "surprise"),
        ("name: x\ndescription: y\nrules: [{kinds: [lstm], codec: {codec: binary}}]", "kinds"),
        ("- just\n- a list", "mapping"),
        ("name: [unclosed", "not valid YAML"),
    ],
)
def test_bad_recipe_yaml_is_a_recipe_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(path)


def test_unknown_recipe_name_suggests_close_ones():
    with pytest.raises(RecipeError, match="did you mean 4bit-2of4"):
        load_recipe("4bit-2of")


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("nowhere/recipe.yaml")


@pytest.mark.parametrize("name", ["kron-8x", "kron-19x"])
def test_kronecker_recipes_whole_checkpoint_ratio_is_what_they_claim(name):
    """'~Nx whole checkpoint': MiniLM's weight file vs the factors' bytes plus everything else at dense_dtype,
    computed from the safetensors headers and the codecs' layouts (no weights read)."""
    from formats import SafetensorsDir
    from formats.codecs.base import DTYPES
    from tests.conftest import minilm_path
    from zoo.compress import make_plan

    recipe = load_recipe(name)
    claimed = float(re.search(r"~(\d+(?:\.\d+)?)x whole checkpoint", recipe.description).group(1))
    source = SafetensorsDir(minilm_path())
    plan = make_plan(source, minilm_path(), recipe)
    assert "embeddings.word_embeddings" in plan.modules and "pooler.dense" in plan.modules
    stored = sum(e.nbytes for e in plan.modules.values())
    stored += sum(source.numel(n) * DTYPES[recipe.dense_dtype].itemsize for n in source.names()
                  if n.removesuffix(".weight") not in plan.modules)
    assert source.file_nbytes() / stored == pytest.approx(claimed, rel=0.03)
