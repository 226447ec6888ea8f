"""`unpack`: a zoo checkpoint becomes a plain dense checkpoint that transformers loads as is."""

from __future__ import annotations

import json

import torch
from zoo.formats import Checkpoint, SafetensorsDir
from zoo.loaders import unpack

from zoo.compress import write_compact
from zoo.recipes import load_recipe
from zoo.resolve import resolve_model


def test_unpacked_checkpoint_is_plain_and_loads_in_transformers(tiny_bert_dir, tmp_path):
    from transformers import AutoModel

    compressed = write_compact(resolve_model(str(tiny_bert_dir)), load_recipe("4bit"), tmp_path / "c").path
    dense_dir = unpack(compressed, tmp_path / "d")

    config = json.loads((dense_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (dense_dir / "tokenizer.json").is_file()

    source, dense = SafetensorsDir(tiny_bert_dir), SafetensorsDir(dense_dir)
    assert sorted(dense.names()) == sorted(source.names())
    for name in source.names():
        assert dense.shape(name) == source.shape(name) and dense.dtype(name) == source.dtype(name)
    ckpt = Checkpoint.open(compressed)
    for module in ckpt.manifest.modules:
        assert torch.equal(dense.get(module + ".weight"), ckpt.decode(module))
    # the recipe stores norms and biases in fp16 (dense_dtype); unpacked, they are the source's rounded to fp16
    norm = "encoder.layer.0.output.LayerNorm.weight"
    assert torch.equal(dense.get(norm), source.get(norm).half().float())

    model = AutoModel.from_pretrained(dense_dir)
    assert torch.equal(
        model.encoder.layer[0].attention.self.query.weight, ckpt.decode("encoder.layer.0.attention.self.query")
    )
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[101, 2023, 102]])).last_hidden_state
    assert out.shape == (1, 3, 64) and torch.isfinite(out).all()


def test_a_config_naming_another_dtype_does_not_round_the_decoded_modules(tiny_bert_dir, tmp_path):
    """config.json says float16 over fp32 weights (a common mismatch): plain tensors follow the config, but a
    decoded module keeps the dtype its manifest entry records, so unpacking loses nothing of it."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_bert_dir, src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))
    compressed = write_compact(resolve_model(str(src)), load_recipe("int8"), tmp_path / "c").path
    dense = SafetensorsDir(unpack(compressed, tmp_path / "d"))
    ckpt = Checkpoint.open(compressed)
    module = "encoder.layer.0.attention.self.query"
    assert ckpt.manifest.modules[module].dtype == "float32"
    assert dense.dtype(module + ".weight") == "float32" and torch.equal(
        dense.get(module + ".weight"), ckpt.decode(module)
    )
    assert dense.dtype("encoder.layer.0.output.LayerNorm.weight") == "float16"
