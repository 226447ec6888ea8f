"""`unpack`: a zoo checkpoint becomes a plain dense checkpoint that transformers loads as is."""

from __future__ import annotations

import json

import torch

from formats import Checkpoint, SafetensorsDir
from loaders import unpack
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
    assert torch.equal(model.encoder.layer[0].attention.self.query.weight, ckpt.decode("encoder.layer.0.attention.self.query"))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[101, 2023, 102]])).last_hidden_state
    assert out.shape == (1, 3, 64) and torch.isfinite(out).all()
