"""Recipes: built-ins mean what their names say, user YAML works the same, bad YAML is refused."""

from __future__ import annotations

import re

import pytest
from zoo.formats import BinarySpec, CodebookSpec, DenseSpec, IntSpec, NMSpec, TernarySpec

from tests.conftest import minilm_path
from zoo.errors import RecipeError
from zoo.recipes import (
    builtin_description,
    builtin_names,
    builtin_text,
    is_encoder_linear,
    load_recipe,
    with_target_ratio,
)

REQUIRED = {"int8", "4bit", "2of4", "4bit-2of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"}


def codec(name: str):
    """The codec a built-in recipe gives the blocks' linear layers (its first rule)."""
    return load_recipe(name).rules[0].codec


def test_required_builtins_exist():
    assert REQUIRED <= set(builtin_names())


@pytest.mark.parametrize("name", sorted(set(builtin_names())))
def test_each_builtin_validates_with_the_description_zoo_recipes_lists(name):
    """`zoo recipes` reads each description from the YAML alone (no validation, so no torch): it must be the one
    the validated recipe has, and the recipe must validate."""
    assert builtin_description(name) == load_recipe(name).description


def test_each_builtin_means_what_its_name_says():
    assert codec("int8") == IntSpec(bits=8, group_size=None, symmetric=True, zero_preserving=True)
    assert codec("4bit") == IntSpec(bits=4, group_size=128, symmetric=True, zero_preserving=True)
    assert codec("2of4") == NMSpec(n=2, m=4, values=DenseSpec(dtype="float16"))
    assert codec("4bit-2of4") == NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=128, zero_preserving=True))
    assert codec("binary") == BinarySpec(group_size=128)
    assert codec("ternary") == TernarySpec(group_size=128)
    assert isinstance(codec("kmeans-4bit"), CodebookSpec) and codec("kmeans-4bit").bits == 4
    assert isinstance(codec("kmeans-1bit"), CodebookSpec) and codec("kmeans-1bit").bits == 1


def whole_ratio(recipe) -> float:
    """The whole-checkpoint ratio a recipe gives all-MiniLM-L6-v2, from its safetensors headers and the codecs'
    layouts (file headers left out: under 0.1%)."""
    from zoo.formats import SafetensorsDir

    from zoo.compress import make_plan

    source = SafetensorsDir(minilm_path())
    plan = make_plan(source, minilm_path(), recipe)
    dense = 2 if recipe.dense_dtype == "float16" else 4
    other = sum(
        source.numel(n) * dense if source.dtype(n) == "float32" else source.nbytes(n)
        for n in source.names()
        if n.removesuffix(".weight") not in plan.modules
    )
    assert "embeddings.word_embeddings" in plan.modules and "pooler.dense" in plan.modules
    return source.file_nbytes() / (sum(e.nbytes for e in plan.modules.values()) + other)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REQUIRED | {"8bit-1of4", "kron-8x", "kron-19x"}))
def test_ratio_in_each_description_is_the_whole_checkpoints(name):
    """The '~Nx whole checkpoint' a description promises is what the codecs' byte counts give on MiniLM."""
    recipe = load_recipe(name)
    claimed = float(re.search(r"~(\d+(?:\.\d+)?)x whole checkpoint", recipe.description).group(1))
    assert whole_ratio(recipe) == pytest.approx(claimed, rel=0.025)


def test_builtins_compress_the_whole_checkpoint():
    """Block linears, word / position / token-type embeddings (BERT's, T5's and Marian's shared tables) and the
    pooler all get a codec; norms, biases and classifier heads are left to dense_dtype (fp16)."""
    for name in REQUIRED:
        recipe = load_recipe(name)
        assert recipe.dense_dtype == "float16", name
        for module in (
            "encoder.layer.3.attention.self.query",
            "model.encoder.layers.0.fc1",
            "encoder.block.1.layer.0.SelfAttention.q",
        ):
            assert recipe.codec_for(module, "linear") == codec(name), (name, module)
        for module in (
            "embeddings.word_embeddings",
            "shared",
            "model.shared",
            "decoder.embed_tokens",
            "embeddings.position_embeddings",
            "embeddings.token_type_embeddings",
        ):
            assert recipe.codec_for(module, "embedding") is not None, (name, module)
        assert recipe.codec_for("pooler.dense", "linear") == IntSpec(bits=8, group_size=None)
        assert recipe.codec_for("wav2vec2.feature_projection.projection", "linear") == IntSpec(bits=8, group_size=None)
        assert recipe.codec_for("classifier", "linear") is None and recipe.codec_for("lm_head", "linear") is None
        assert recipe.codec_for("encoder.layer.0.attention.self.query", "embedding") is None
        assert recipe.codec_for("feature_extractor.conv_layers.0.conv", "conv") is None
        assert recipe.codec_for("encoder.block.0.layer.0.SelfAttention.relative_attention_bias", "embedding") is None


def test_an_embedding_group_that_does_not_tile_its_rows_fails_naming_the_module(tmp_path):
    recipe = tmp_path / "g100.yaml"
    recipe.write_text(
        "name: g100\ndescription: int4 embeddings, group 100\nrules:\n"
        "  - {targets: [word_embeddings], kinds: [embedding], codec: {codec: int, bits: 4, group_size: 100}}\n"
    )
    with pytest.raises(
        RecipeError,
        match=r"group_size 100 does not tile the 384-wide rows of the embedding "
        r"embeddings\.word_embeddings",
    ) as caught:
        load_recipe(recipe).spec_for("embeddings.word_embeddings", "embedding", (30522, 384))
    assert "128" in caught.value.hint and "null" in caught.value.hint
    assert load_recipe(recipe).spec_for("encoder.layer.0.output.dense", "linear", (384, 1536)) is None


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
        (
            "name: x\ndescription: y\nrules: [{targets: ['(unclosed'], codec: {codec: binary}}]",
            "invalid regular expression",
        ),
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


def test_target_ratio_sets_a_search_recipes_target_and_nothing_else():
    search = load_recipe("search")
    patched = with_target_ratio(search, 7.5)
    assert patched.search.target_ratio == 7.5 and search.search.target_ratio != 7.5  # a copy: the original stays
    assert patched.model_dump(exclude={"search"}) == search.model_dump(exclude={"search"})
    assert patched.search.model_dump(exclude={"target_ratio"}) == search.search.model_dump(exclude={"target_ratio"})


@pytest.mark.parametrize("ratio", [1, 0.5, float("nan")])
def test_target_ratio_must_be_above_one(ratio):
    with pytest.raises(RecipeError, match="--target-ratio must be above 1") as raised:
        with_target_ratio(load_recipe("search"), ratio)
    assert raised.value.hint


def test_target_ratio_is_refused_for_a_recipe_that_fixes_its_codecs():
    with pytest.raises(RecipeError, match="int8 fixes its codecs"):
        with_target_ratio(load_recipe("int8"), 12)


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("nowhere/recipe.yaml")


def test_every_problem_of_a_recipe_is_reported_at_once_with_suggestions(tmp_path):
    """A misspelt `bitz` was reported as "bits: Field required", one problem per run."""
    path = tmp_path / "bad.yaml"
    path.write_text("""name: mine
description: typos
rules:
  - kinds: [linear]
    codec: {codec: int, bitz: 4, group_size: 128, symetric: true}
  - targets: ['word_embeddings$']
    kinds: [embeding]
    codec: {codec: int, bits: 8}
traning: {epochs: 2}
""")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path} has 4 problems:")
    for line in (
        "rules[0].codec: unknown key 'bitz' (did you mean 'bits'?)",
        "rules[0].codec: unknown key 'symetric' (did you mean 'symmetric'?)",
        "rules[1].kinds[0]: 'embeding' is not one of linear, embedding, conv (did you mean 'embedding'?)",
        "(top level): unknown key 'traning' (did you mean 'training'?)",
    ):
        assert f"  - {line}" in message.splitlines(), message
    assert "Field required" not in message  # the missing `bits` is the misspelt `bitz`


def test_a_group_size_that_does_not_tile_the_rows_is_refused_for_every_module_at_once(tiny_bert_dir, tmp_path):
    from zoo.formats import SafetensorsDir

    from zoo.compress import make_plan

    path = tmp_path / "g100.yaml"
    path.write_text("name: g100\ndescription: d\nrules: [{codec: {codec: int, bits: 4, group_size: 100}}]\n")
    with pytest.raises(RecipeError) as info:  # tiny BERT: 160-wide FFN output rows (the 64-wide ones fit one group)
        make_plan(SafetensorsDir(tiny_bert_dir), tiny_bert_dir, load_recipe(path))
    message = str(info.value)
    assert message.startswith("recipe g100 cannot serve 2 modules:")
    assert "group_size 100 does not tile the 160-wide rows of the linear encoder.layer.1.output.dense" in message
    assert "160 (32)" not in message and "divides 160 (32)" in info.value.hint
    path.write_text("name: g128\ndescription: d\nrules: [{codec: {codec: int, bits: 4, group_size: 128}}]\n")
    assert make_plan(SafetensorsDir(tiny_bert_dir), tiny_bert_dir, load_recipe(path)).modules  # power of two: ragged


def test_a_recipe_matching_nothing_shows_the_models_module_names(tiny_bert_dir, tmp_path):
    from zoo.formats import SafetensorsDir

    from zoo.compress import make_plan

    path = tmp_path / "t5ish.yaml"
    path.write_text("name: t5ish\ndescription: d\nrules: [{targets: ['block\\\\.'], codec: {codec: int, bits: 4}}]\n")
    with pytest.raises(RecipeError) as info:
        make_plan(SafetensorsDir(tiny_bert_dir), tiny_bert_dir, load_recipe(path))
    assert "its modules are named like" in str(info.value) and "encoder.layer.0.attention.self.key (linear)" in str(
        info.value
    )
    assert "zoo info" not in info.value.hint  # zoo info refuses a dense model
