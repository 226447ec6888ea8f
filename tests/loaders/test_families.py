"""Every encoder family zoo claims, as a tiny random model of transformers' base class: compressed with int8
and 4bit-2of4, loaded back with zoo.from_pretrained, and equal to the dense model `zoo unpack` makes of the same
checkpoint. README's table of supported architectures is FAMILIES (tests/test_project.py keeps them equal)."""

from __future__ import annotations

import pytest
import torch
from zoo.formats import Checkpoint

import zoo
from zoo import loaders
from zoo.compress import write_compact
from zoo.recipes import load_recipe
from zoo.resolve import resolve_model

SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 128,
    "max_position_embeddings": 64,
}
FAMILIES = {  # README name -> (config class, its keyword arguments)
    "BERT": ("BertConfig", SMALL),
    "RoBERTa": ("RobertaConfig", {**SMALL, "pad_token_id": 1}),
    "DistilBERT": (
        "DistilBertConfig",
        {"dim": 64, "n_layers": 2, "n_heads": 2, "hidden_dim": 128, "vocab_size": 128, "max_position_embeddings": 64},
    ),
    "DeBERTa-v2": (
        "DebertaV2Config",
        {**SMALL, "relative_attention": True, "position_buckets": 16, "pos_att_type": ["p2c", "c2p"]},
    ),
    "ELECTRA": ("ElectraConfig", {**SMALL, "embedding_size": 32}),
    "ALBERT": ("AlbertConfig", {**SMALL, "embedding_size": 32}),
    "ViT": (
        "ViTConfig",
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
        },
    ),
    "wav2vec2": (
        "Wav2Vec2Config",
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "conv_dim": (32, 32),
            "conv_kernel": (8, 8),
            "conv_stride": (4, 4),
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
        },
    ),
    "T5": (
        "T5Config",
        {
            "vocab_size": 128,
            "d_model": 64,
            "d_ff": 128,
            "d_kv": 32,
            "num_layers": 2,
            "num_heads": 2,
            "decoder_start_token_id": 0,
        },
    ),
    "Marian": (
        "MarianConfig",
        {
            "vocab_size": 128,
            "d_model": 64,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 128,
            "decoder_ffn_dim": 128,
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "decoder_start_token_id": 0,
        },
    ),
}


def _inputs(family: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if family == "ViT":
        return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    if family == "wav2vec2":
        return {"input_values": torch.randn(2, 800, generator=g)}
    ids = torch.randint(3, 128, (2, 7), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family in ("T5", "Marian"):
        inputs["decoder_input_ids"] = ids[:, :5]
    return inputs


def test_an_architecture_zoo_cannot_serve_is_named(tmp_path):
    import transformers

    from zoo.errors import UnsupportedModelError

    transformers.GPT2Model(
        transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=2, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0
        )
    ).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedModelError, match="GPT2Model is not an architecture zoo serves: it has no nn.Linear"):
        write_compact(resolve_model(str(tmp_path / "gpt2")), load_recipe("int8"), tmp_path / "zoo")


@pytest.mark.parametrize("recipe", ["int8", "4bit-2of4"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_loads_as_its_unpacked_dense_model(family, recipe, tmp_path):
    import transformers

    config_class, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    transformers.AutoModel.from_config(getattr(transformers, config_class)(**kwargs)).save_pretrained(
        tmp_path / "dense"
    )
    path = write_compact(resolve_model(str(tmp_path / "dense")), load_recipe(recipe), tmp_path / "zoo").path
    assert Checkpoint.open(path).manifest.modules, f"{recipe} compressed nothing in {family}"
    dense = transformers.AutoModel.from_pretrained(loaders.unpack(path, tmp_path / "unpacked")).eval()
    model = zoo.from_pretrained(path).eval()
    assert type(model) is type(dense)
    with torch.no_grad():
        got, want = model(**_inputs(family)).last_hidden_state, dense(**_inputs(family)).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
