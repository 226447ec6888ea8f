"""zoo.loaders.compat: each transformers (and torch) internal zoo uses still exists with the shape zoo expects.
A transformers release that moves one fails here, by name; pyproject caps transformers below the next major."""

from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, ViTConfig, ViTModel
from transformers.quantizers import auto
from zoo.loaders import compat
from zoo.loaders.kernels import Int8Matmul
from zoo.loaders.quantizer import ZooConfig, ZooHfQuantizer
from zoo.loaders.runtime import ZooModule

from tests.conftest import tiny_bert_config


def small_config(**kwargs) -> BertConfig:
    return tiny_bert_config(vocab_size=99, hidden_size=16, intermediate_size=32, max_position_embeddings=16, **kwargs)


def test_the_quantizer_tables_hold_zoo():
    """AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING and LOADING_ATTRIBUTES_CONFIG_TYPES: module-level
    tables of transformers.quantizers.auto that register_quantization_method fills."""
    assert auto.AUTO_QUANTIZATION_CONFIG_MAPPING["zoo"] is ZooConfig
    assert auto.AUTO_QUANTIZER_MAPPING["zoo"] is ZooHfQuantizer
    assert isinstance(auto.LOADING_ATTRIBUTES_CONFIG_TYPES, tuple)
    assert auto.LOADING_ATTRIBUTES_CONFIG_TYPES.count(ZooConfig) == 1
    compat.register_quantization_method("zoo", ZooConfig, ZooHfQuantizer)  # idempotent
    assert auto.LOADING_ATTRIBUTES_CONFIG_TYPES.count(ZooConfig) == 1


def test_the_loading_attributes_table_is_what_from_pretrained_reads():
    """transformers reads LOADING_ATTRIBUTES_CONFIG_TYPES from its module at load time (not a copy taken at
    import), so the tuple zoo replaces is the one that counts."""
    source = inspect.getsource(auto)
    assert "LOADING_ATTRIBUTES_CONFIG_TYPES" in source.split("def merge_quantization_configs", 1)[1]


@pytest.mark.parametrize("cls, method", [(cls, m) for cls, methods in compat.OVERRIDDEN.items() for m in methods])
def test_each_overridden_private_method_exists_with_its_parameters(cls, method):
    params = list(inspect.signature(getattr(cls, method)).parameters)
    assert params[0] == "self"
    assert params[1 : 1 + len(compat.OVERRIDDEN[cls][method])] == list(compat.OVERRIDDEN[cls][method])


def test_hf_quantizer_calls_the_hooks_zoo_overrides():
    from transformers.quantizers.base import HfQuantizer

    calls = {
        "preprocess_model": "_process_model_before_weight_loading",
        "postprocess_model": "_process_model_after_weight_loading",
        "dequantize": "_dequantize",
    }
    for public, hook in calls.items():
        assert f"self.{hook}(" in inspect.getsource(getattr(HfQuantizer, public)), (public, hook)


def test_every_private_method_zoo_overrides_is_listed():
    """A new override of a private method of transformers or torch is added to compat.OVERRIDDEN (and tested)."""
    subclasses = ((ZooHfQuantizer, compat.HfQuantizer), (ZooModule, torch.nn.Module), (Int8Matmul, torch.nn.Module))
    for cls, base in subclasses:
        private = {
            name
            for name in vars(cls)
            if name.startswith("_") and not name.startswith("__") and callable(getattr(base, name, None))
        }
        assert private <= set(compat.OVERRIDDEN[base]), (cls, private)


def test_tied_weights_keys_is_the_models_own_map():
    """`all_tied_weights_keys` (transformers 5): target -> source parameter names, a dict zoo edits in place."""
    model = BertForMaskedLM(small_config())
    keys = compat.tied_weights_keys(model)
    assert keys is model.all_tied_weights_keys
    assert keys["cls.predictions.decoder.weight"] == "bert.embeddings.word_embeddings.weight"
    assert compat.tied_weights_keys(torch.nn.Linear(2, 2)) == {}


def test_loaded_tensors_carry_transformers_flag(tmp_path):
    """`_is_hf_initialized`: set by transformers' loader on every tensor it fills from the checkpoint."""
    BertModel(small_config()).save_pretrained(tmp_path)
    model = BertModel.from_pretrained(tmp_path)
    assert all(compat.loaded_from_checkpoint(p) for p in model.parameters())
    assert not compat.loaded_from_checkpoint(torch.zeros(1))


def test_renamed_keys_follow_the_checkpoint_conversion():
    """transformers.conversion_mapping and core_model_loading (WeightRenaming, rename_source_key): ViT's
    checkpoint keys are renamed on load; BERT's are not."""
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    assert isinstance(WeightRenaming, type)
    assert list(inspect.signature(rename_source_key).parameters)[:5] == [
        "source_key",
        "weight_renamings",
        "weight_converters",
        "base_model_prefix",
        "meta_state_dict",
    ]
    with torch.device("meta"):
        vit = ViTModel(
            ViTConfig(
                image_size=16,
                patch_size=8,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
            )
        )
        bert = BertModel(small_config())
    key = "encoder.layer.0.attention.attention.query.weight"
    renamed = compat.renamed_keys(vit, [key])[key]
    assert renamed != key and renamed in vit.state_dict()
    bert_key = "encoder.layer.0.attention.self.query.weight"
    assert compat.renamed_keys(bert, [bert_key]) == {bert_key: bert_key}


@pytest.mark.parametrize(
    "conv",
    [torch.nn.Conv1d(2, 3, 3, padding=1), torch.nn.Conv2d(2, 3, 3, stride=2), torch.nn.Conv3d(2, 3, 1, groups=1)],
)
def test_conv_forward_is_the_layers_own_convolution(conv):
    """torch's `_ConvNd._conv_forward(input, weight, bias)` on Conv1d, Conv2d and Conv3d."""
    assert list(inspect.signature(type(conv)._conv_forward).parameters) == ["self", "input", "weight", "bias"]
    x = torch.randn((1, 2) + (5,) * (conv.weight.dim() - 2))
    assert torch.equal(compat.conv_forward(conv, x, conv.weight, conv.bias), conv(x))


def test_int8_matmul_is_an_exact_integer_product():
    """torch's private `_int_mm` (int8 x int8 -> int32)."""
    a = torch.randint(-128, 128, (17, 32), dtype=torch.int8)
    b = torch.randint(-128, 128, (32, 8), dtype=torch.int8)
    out = compat.int8_matmul(a, b)
    assert out.dtype == torch.int32 and torch.equal(out, a.int() @ b.int())


def test_transformers_is_a_module_whose_loader_zoo_can_wrap():
    """zoo._register wraps the loader of the `transformers` spec (a sys.meta_path finder) so that `import zoo`
    registers the method once transformers is imported: the spec's loader has the two methods it calls."""
    spec = importlib.util.find_spec("transformers")
    assert spec is not None and callable(spec.loader.create_module) and callable(spec.loader.exec_module)


@pytest.mark.parametrize("wraps", [True, False])
def test_per_token_quantization_rounds_like_torch_round(wraps, monkeypatch):
    """kernels.quantize_per_token rounds by adding 1.5 * 2**23 and, where torch's int32 -> int8 cast keeps the
    low byte (checked at import: `_CAST_WRAPS`), reads the int8 straight from the sum's bits; either way its
    values are torch.round's, ties to even included, for every magnitude up to 127."""
    from zoo.loaders import kernels

    monkeypatch.setattr(kernels, "_CAST_WRAPS", wraps and kernels._CAST_WRAPS)
    torch.manual_seed(0)
    x = torch.cat([torch.randn(63, 200) * 5, torch.linspace(-127, 127, 509).unsqueeze(0)[:, :200]])
    x[0, :5] = torch.tensor([0.5, -0.5, 1.5, -2.5, 127.0])
    values, scale = kernels.quantize_per_token(x)
    assert values.dtype == torch.int8 and scale.shape == (64, 1)
    assert torch.equal(values, torch.round(x / scale).to(torch.int8))
    assert values.abs().max().item() == 127
    zero, zero_scale = kernels.quantize_per_token(torch.zeros(2, 8))  # an all-zero token: no division by zero
    assert torch.equal(zero, torch.zeros(2, 8, dtype=torch.int8)) and bool((zero_scale > 0).all())
