"""Tied weights: a compressed word embedding that the model ties to an output head (BERT-MLM's decoder, T5's
and Marian's shared embeddings with their lm_head and embed_tokens) is stored once, shared by every user at
load in all three modes, written back once by save_pretrained, untied by nobody (dequantize and unpack restore
the tie), and trained as one weight. Tiny random models with MiniLM's tokenizer: structure only."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from zoo.formats import Checkpoint, FormatError, SafetensorsDir
from zoo.loaders import ZooEmbedding, ZooLinear, unpack

import zoo
from tests.conftest import tiny_bert_config, with_tokenizer
from zoo.compress import write_compact
from zoo.errors import RecipeError
from zoo.recipes import load_recipe
from zoo.resolve import resolve_model

EMBEDDING, DECODER = "bert.embeddings.word_embeddings", "cls.predictions.decoder"
IDS = torch.tensor([[101, 2023, 2003, 1037, 103, 2154, 1012, 102], [101, 1045, 2293, 103, 1012, 102, 0, 0]])


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    """A tiny BertForMaskedLM (decoder tied to the word embeddings), compressed with 4bit, and its dense unpack."""
    from transformers import BertForMaskedLM

    root = tmp_path_factory.mktemp("mlm")
    torch.manual_seed(0)
    config = tiny_bert_config(num_hidden_layers=2)
    BertForMaskedLM(config).save_pretrained(root / "dense")
    with_tokenizer(root / "dense")
    compressed = write_compact(resolve_model(str(root / "dense")), load_recipe("4bit"), root / "4bit").path
    return compressed, unpack(compressed, root / "unpacked")


def logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=(IDS != 0).long()).logits


def test_the_tied_pair_is_stored_once(mlm):
    compressed, _ = mlm
    manifest = Checkpoint.open(compressed).manifest
    assert manifest.modules[EMBEDDING].tied == [DECODER]
    assert DECODER not in manifest.modules
    names = SafetensorsDir(compressed).names()
    assert f"{EMBEDDING}.weight_packed" in names and not any(n.startswith(DECODER) for n in names)


@pytest.mark.parametrize("mode", ["materialize", "packed", "kernel"])
def test_decoder_and_embeddings_share_one_compressed_module_in_every_mode(mode, mlm):
    from transformers import AutoModelForMaskedLM

    compressed, dense_dir = mlm
    reference = logits(AutoModelForMaskedLM.from_pretrained(dense_dir))
    model, info = zoo.from_pretrained(compressed, mode=mode, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    embedding, decoder = model.get_submodule(EMBEDDING), model.get_submodule(DECODER)
    assert type(embedding) is ZooEmbedding and embedding.owner is None
    assert type(decoder) is ZooLinear and decoder.owner is embedding
    assert not list(decoder.buffers(recurse=False)) or mode == "kernel"  # its weight lives in the embedding
    if mode == "materialize":  # decoded once, for both
        assert decoder.dense_weight() is embedding.weight_dense
    got = logits(model)
    if mode == "kernel":  # int8 activations in the decoder
        assert torch.nn.functional.cosine_similarity(got.flatten(), reference.flatten(), dim=0) >= 0.99
    else:
        assert (got - reference).abs().max() <= 1e-4


def test_fill_mask_pipeline_works_on_the_compressed_model(mlm):
    from transformers import AutoModelForMaskedLM, pipeline

    compressed, dense_dir = mlm
    ours = pipeline("fill-mask", model=zoo.from_pretrained(compressed), tokenizer=str(compressed))
    theirs = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(dense_dir), tokenizer=str(dense_dir))
    text = "the film was [MASK] from start to end."
    assert [p["token"] for p in ours(text)] == [p["token"] for p in theirs(text)]


def test_save_pretrained_writes_the_tied_weight_once_and_round_trips(mlm, tmp_path):
    compressed, _ = mlm
    model = zoo.from_pretrained(compressed)
    model.save_pretrained(tmp_path / "first")
    again = zoo.from_pretrained(tmp_path / "first")
    again.save_pretrained(tmp_path / "second")
    first = (tmp_path / "first" / "model.safetensors").read_bytes()
    assert first == (tmp_path / "second" / "model.safetensors").read_bytes()
    original, saved = SafetensorsDir(compressed), SafetensorsDir(tmp_path / "first")
    assert sorted(saved.names()) == sorted(original.names())  # no decoder copy, fp16 norms stay fp16
    assert all(
        saved.dtype(n) == original.dtype(n) and torch.equal(saved.get(n), original.get(n)) for n in saved.names()
    )
    assert Checkpoint.open(tmp_path / "first").manifest.modules == Checkpoint.open(compressed).manifest.modules
    assert torch.equal(logits(again), logits(model))


def test_dequantize_and_unpack_restore_the_tie(mlm):
    from transformers import AutoModelForMaskedLM

    compressed, dense_dir = mlm
    model = zoo.from_pretrained(compressed)
    expected = logits(model)
    plain = model.dequantize()
    assert type(plain.get_submodule(DECODER)) is torch.nn.Linear
    assert plain.get_submodule(DECODER).weight is plain.get_submodule(EMBEDDING).weight
    assert torch.equal(logits(plain), expected)
    assert not any(n.startswith(DECODER + ".weight") for n in SafetensorsDir(dense_dir).names())
    dense = AutoModelForMaskedLM.from_pretrained(dense_dir)
    assert dense.get_submodule(DECODER).weight is dense.get_submodule(EMBEDDING).weight


def test_tied_modules_given_different_codecs_are_refused_before_writing(mlm, tmp_path):
    compressed, _ = mlm
    source = compressed.parent / "dense"
    recipe = tmp_path / "split.yaml"
    recipe.write_text(
        "name: split\ndescription: int4 embeddings, int8 decoder\nrules:\n"
        "  - {targets: [word_embeddings], kinds: [embedding], codec: {codec: int, bits: 4}}\n"
        "  - {targets: ['predictions\\.decoder'], kinds: [linear], codec: {codec: int, bits: 8}}\n"
    )
    with pytest.raises(
        RecipeError,
        match=r"gives tied modules different codecs \(bert\.embeddings\.word_embeddings: "
        r"int4 g128 sym, cls\.predictions\.decoder: int8 g128 sym\)",
    ) as caught:
        write_compact(resolve_model(str(source)), load_recipe(recipe), tmp_path / "out")
    assert "stored once" in caught.value.hint and not (tmp_path / "out").exists()


def test_a_tied_weight_whose_shared_tensors_are_missing_fails_at_load(mlm, tmp_path):
    compressed, _ = mlm
    broken = shutil.copytree(compressed, tmp_path / "broken")
    file = broken / "model.safetensors"
    with safe_open(file, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(file)
    del tensors[f"{EMBEDDING}.weight_packed"]
    save_file(tensors, file, metadata=metadata)
    with pytest.raises(
        FormatError,
        match=rf"module {EMBEDDING}: tensor '{EMBEDDING}\.weight_packed' named by the "
        "manifest is missing",
    ):
        zoo.from_pretrained(broken)


def test_a_model_tying_a_compressed_embedding_it_was_not_compressed_with_shares_it(
    tiny_bert_dir, compressed_models, tmp_path
):
    """A BertModel checkpoint (no decoder) loaded as BertForMaskedLM: transformers ties the new decoder to the
    embeddings, and zoo shares the compressed table with it, as transformers would share a dense one."""
    from transformers import AutoModelForMaskedLM

    recipe = tmp_path / "emb.yaml"
    recipe.write_text(
        "name: emb\ndescription: int8 word embeddings\nrules:\n"
        "  - {targets: [word_embeddings], kinds: [embedding], codec: {codec: int, bits: 8}}\n"
    )
    model = AutoModelForMaskedLM.from_pretrained(compressed_models.path(tiny_bert_dir, recipe))
    assert model.get_submodule(DECODER).owner is model.get_submodule(EMBEDDING)


def test_training_keeps_a_tied_pair_one_weight(tmp_path):
    """The student trains one fake-quantized table for both users, can be checkpointed while parametrized (what
    Trainer does each epoch), and exports as one tied weight on the codec's grid, which the packer stores once."""
    from transformers import BertForMaskedLM
    from zoo.formats import check_fits

    from zoo.methods import attach, export, plan_modules

    torch.manual_seed(0)
    config = tiny_bert_config()
    model = BertForMaskedLM(config)
    recipe = load_recipe("4bit")
    plan = plan_modules(model, recipe)
    assert EMBEDDING in plan and DECODER not in plan
    attach(model, plan, recipe.training)
    embedding, decoder = model.get_submodule(EMBEDDING), model.get_submodule(DECODER)
    x = torch.randn(3, 32)
    assert torch.equal(decoder(x), torch.nn.functional.linear(x, embedding.weight, decoder.bias))  # the fake weight
    assert not torch.equal(embedding.weight, embedding.parametrizations.weight.original)
    model(input_ids=IDS).logits.sum().backward()
    assert embedding.parametrizations.weight.original.grad is not None
    model.save_pretrained(tmp_path / "checkpoint")  # shared latent weight: a known tie, saved once
    export(model)
    assert decoder.weight is embedding.weight and "forward" not in decoder.__dict__
    check_fits(embedding.weight.detach(), plan[EMBEDDING])
    model.save_pretrained(tmp_path / "exported")
    with_tokenizer(tmp_path / "exported")
    packed = write_compact(resolve_model(str(tmp_path / "exported")), recipe, tmp_path / "packed", pack=True)
    assert packed.manifest.modules[EMBEDDING].tied == [DECODER]
