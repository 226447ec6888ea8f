"""`zoo export --onnx`: the written model carries the stored codes, runs in onnxruntime without zoo, and gives
zoo's outputs (materialize mode exactly with the `exact` kernel; kernel mode's approximation with `int8`)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import leftovers, tiny_bert_config, with_tokenizer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from zoo.errors import ExportError
from zoo.export import PROBE_TEXT, export_onnx, session

pytestmark = pytest.mark.slow  # every export runs torch's exporter: seconds each


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny-cls")
    config = tiny_bert_config(hidden_size=64, num_hidden_layers=2, intermediate_size=160, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(path)
    return with_tokenizer(path)


def _text(path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return tok(list(PROBE_TEXT), padding=True, return_tensors="pt")


def _run(onnx_dir, encoded) -> list[np.ndarray]:
    sess = session(onnx_dir / "model.onnx")
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: encoded[n].numpy() for n in names})


def _zoo(path, encoded, mode: str) -> torch.Tensor:
    import zoo

    model = zoo.from_pretrained(path, mode=mode).eval()
    with torch.no_grad():
        out = model(**encoded)
    return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


def _pooled_cosine(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    w = mask.unsqueeze(-1).float()
    a, b = (x.float().mul(w).sum(1) / w.sum(1) for x in (a, b))
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())


def _value(model, name: str, elem_type: int) -> np.ndarray:
    """A value computed from initializers only (what the session folds when it starts), computed here by
    onnxruntime on the subgraph that makes it."""
    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return onnx.numpy_helper.to_array(inits[name])
    made_by = {out: n for n in model.graph.node for out in n.output}
    nodes, wanted, used = [], [name], set()
    while wanted:
        value = wanted.pop()
        if value in inits:
            used.add(value)
        elif value and value in made_by and made_by[value] not in nodes:
            nodes.append(made_by[value])
            wanted += list(made_by[value].input)
    order = [n for n in model.graph.node if n in nodes]
    out = onnx.helper.make_tensor_value_info(name, elem_type, None)
    graph = onnx.helper.make_graph(order, "value", [], [out], [inits[i] for i in sorted(used)])
    sub = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    return ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]


def _decode_matmul_nbits(model, node) -> torch.Tensor:
    """W (N, K) back from a MatMulNBits node's inputs: what the file carries."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
    packed = (
        torch.from_numpy(_value(model, node.input[1], onnx.TensorProto.UINT8).copy()).reshape(n, -1).to(torch.int32)
    )
    per = 8 // bits
    codes = ((packed.unsqueeze(-1) >> (torch.arange(per) * bits)) & ((1 << bits) - 1)).reshape(n, -1)
    scale = torch.from_numpy(_value(model, node.input[2], onnx.TensorProto.FLOAT).copy()).reshape(n, -1)
    values = (codes.float() - (1 << (bits - 1))) * scale.repeat_interleave(block, dim=1)[:, : codes.shape[1]]
    return values[:, :k]


@pytest.mark.parametrize("recipe", ["int8", "4bit", "4bit-2of4"])
def test_exact_export_carries_the_stored_codes(tiny_bert_dir, compressed_models, tmp_path, recipe):
    src = compressed_models.path(tiny_bert_dir, recipe)
    result = export_onnx(src, tmp_path / "onnx", kernel="exact")
    model = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    graph = model.graph

    # every compressed linear of the blocks is a MatMulNBits whose codes and scales decode to zoo's weight
    import zoo

    zm = zoo.from_pretrained(src).eval()
    weights = {name: m.dense_weight() for name, m in zm.named_modules() if hasattr(m, "dense_weight")}
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 6  # 2 layers x (q, k, v, attention output, intermediate, output)
    for node in nbits:
        module = node.name.removeprefix("zoo.")
        assert torch.equal(_decode_matmul_nbits(model, node), weights[module].float()), module
    gathers = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    assert {n.name for n in gathers} == {
        "zoo.embeddings.word_embeddings",
        "zoo.embeddings.position_embeddings",
        "zoo.embeddings.token_type_embeddings",
    }
    # no compressed weight is left in the file as floats
    shapes = {tuple(w.shape) for w in weights.values()} | {tuple(w.shape)[::-1] for w in weights.values()}
    floats = [
        i.name
        for i in graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and tuple(i.dims) in shapes and not i.name.startswith("zoo.")
    ]  # (the codes' own scales may share a shape with a small table, token types' (2, 64))
    assert floats == []
    assert result.onnx_nbytes < 0.6 * sum(w.numel() * 4 for w in weights.values())

    # provenance: the manifest's hash, in the model's metadata
    from zoo.formats import Checkpoint

    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["zoo.manifest_sha256"] == Checkpoint.open(src).manifest.content_sha256() == result.manifest_sha256

    # onnxruntime gives materialize mode's outputs, to float rounding
    encoded = _text(src)
    (got,) = _run(tmp_path / "onnx", encoded)
    want = _zoo(src, encoded, "materialize")
    assert np.abs(got - want.numpy()).max() <= 1e-4 * float(want.abs().max())
    assert result.checked is not None and result.checked["max_rel_diff"] <= 1e-4


def test_int8_kernel_export_agrees_with_zoo_kernel_mode(tiny_classifier, compressed_models, tmp_path):
    src = compressed_models.path(tiny_classifier, "4bit-2of4")
    result = export_onnx(src, tmp_path / "onnx", kernel="int8")
    assert result.outputs == ("logits",)
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    # 2 layers x 6 linears, and the pooler (the classifier reads its output; feature extraction does not)
    ops = [n.op_type for n in graph.node]
    assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulIntegerToFloat") == 13
    # query, key and value read one activation: quantized once per layer, as ONNX Runtime's quantize_dynamic does
    assert ops.count("DynamicQuantizeLinear") == 2 and ops.count("MatMulIntegerToFloat") == 6
    # the file holds the 4-bit codes; the int8 rows are made when the session starts
    assert not any(i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2 for i in graph.initializer)
    encoded = _text(src)
    (got,) = _run(tmp_path / "onnx", encoded)
    got_t = torch.from_numpy(got)
    for mode in ("kernel", "materialize"):
        want = _zoo(src, encoded, mode)
        cosine = float(torch.nn.functional.cosine_similarity(got_t.flatten(), want.flatten(), dim=0))
        assert cosine >= 0.99, (mode, cosine)


def test_the_export_runs_without_zoo_or_torch(tiny_bert_dir, compressed_models, tmp_path):
    src = compressed_models.path(tiny_bert_dir, "4bit")
    export_onnx(src, tmp_path / "onnx")
    script = (
        "import sys\n"
        "for name in ('zoo', 'torch', 'transformers'):\n"
        "    sys.modules[name] = None  # importing any of them now fails\n"
        "import numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(tmp_path / 'onnx' / 'model.onnx')!r}, providers=['CPUExecutionProvider'])\n"
        "ids = np.array([[101, 2023, 2003, 1037, 3231, 102]], dtype=np.int64)\n"
        "feed = {'input_ids': ids, 'attention_mask': np.ones_like(ids), 'token_type_ids': np.zeros_like(ids)}\n"
        "out = s.run(None, {i.name: feed[i.name] for i in s.get_inputs()})[0]\n"
        "print(list(out.shape), bool(np.isfinite(out).all()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[1,", "6,", "64]", "True"]
    # the folder is what optimum's ORTModel classes read: config.json without the zoo manifest, the tokenizer
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "bert"
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()


def test_a_codec_without_block_codes_is_refused_by_name(tiny_bert_dir, compressed_models, tmp_path):
    src = compressed_models.path(tiny_bert_dir, "kmeans-4bit")
    with pytest.raises(ExportError, match=r"encoder\.layer\.0\.attention\.self\.query \(kmeans"):
        export_onnx(src, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    assert leftovers(tmp_path) == []


def test_cli_export(tiny_bert_dir, compressed_models, tmp_path, run_cli):
    src = compressed_models.path(tiny_bert_dir, "int8")
    no_format = run_cli("export", str(src), "--out", str(tmp_path / "a"))
    assert no_format.exit_code == 1 and "--onnx" in no_format.stderr
    bad_kernel = run_cli("export", str(src), "--onnx", "--kernel", "fp4", "--out", str(tmp_path / "a"))
    assert bad_kernel.exit_code == 1 and "int8, nbits, exact" in bad_kernel.stderr
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = run_cli("export", str(src), "--onnx", "--out", str(mine), "--overwrite")
    assert refused.exit_code == 1 and (mine / "notes.txt").read_text() == "keep me"
    done = run_cli("export", str(src), "--onnx", "--out", str(tmp_path / "a"))
    assert done.exit_code == 0, done.stderr
    assert "Checked with onnxruntime" in done.stdout and "int8 x int8" in done.stdout
    again = run_cli("export", str(src), "--onnx", "--out", str(tmp_path / "a"), "--overwrite")
    assert again.exit_code == 0, again.stderr


def test_real_minilm_export(minilm_dir, compressed_models, tmp_path):
    """all-MiniLM-L6-v2, 4bit-2of4: `exact` reproduces materialize mode; `int8` keeps kernel mode's rule (cosine
    >= 0.99 of mean-pooled sentence embeddings against materialize mode)."""
    src = compressed_models.path(minilm_dir, "4bit-2of4")
    encoded = _text(src)
    references = {mode: _zoo(src, encoded, mode) for mode in ("materialize", "kernel")}
    exact = export_onnx(src, tmp_path / "exact", kernel="exact")
    (got,) = _run(tmp_path / "exact", encoded)
    want = references["materialize"].numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    fast = export_onnx(src, tmp_path / "int8", kernel="int8")
    (got,) = _run(tmp_path / "int8", encoded)
    mask = encoded["attention_mask"]
    assert _pooled_cosine(torch.from_numpy(got), references["materialize"], mask) >= 0.99
    # zoo's kernel mode quantizes activations per token, DynamicQuantizeMatMul per tensor: two approximations
    # of materialize mode, each within the 0.99 rule of it, so within each other's by less (the angles add)
    assert _pooled_cosine(references["kernel"], references["materialize"], mask) >= 0.99
    assert _pooled_cosine(torch.from_numpy(got), references["kernel"], mask) >= 0.98
    # smaller than ONNX Runtime's own int8 of the dense model (23 MB): 4-bit codes, 4-bit embeddings
    assert fast.onnx_nbytes < 16e6 and exact.onnx_nbytes < 16e6


@pytest.mark.parametrize("head", ["masked-lm", "vit"])
def test_other_heads_export_exactly(head, compressed_models, tmp_path_factory, tmp_path):
    """A masked-LM head whose decoder is tied to the word embeddings (one set of codes serves the gather and the
    matmul), and an image model (pixel values in)."""
    from transformers import BertForMaskedLM, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    src_dir = tmp_path_factory.mktemp(head)
    if head == "vit":
        config = ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=32,
            patch_size=8,
            num_labels=3,
        )
        ViTForImageClassification(config).save_pretrained(src_dir)
    else:
        BertForMaskedLM(tiny_bert_config(hidden_size=64, num_hidden_layers=2, intermediate_size=160)).save_pretrained(
            src_dir
        )
        with_tokenizer(src_dir)
    src = compressed_models.path(src_dir, "4bit")
    result = export_onnx(src, tmp_path / "onnx", kernel="exact")
    assert result.outputs == ("logits",) and result.unused == []
    assert result.checked is not None and result.checked["max_rel_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    if head == "masked-lm":  # the tied table: one set of codes, read by the gather and by the decoder's matmul
        codes = "zoo.bert.embeddings.word_embeddings.codes"
        readers = sorted(n.op_type for n in graph.node if codes in n.input)
        assert readers == ["GatherBlockQuantized", "Reshape"]  # the reshape into MatMulNBits' B (folded at load)
        assert sum(i.name.endswith(".codes") and "word_embeddings" in i.name for i in graph.initializer) == 1
        reshaped = next(n.output[0] for n in graph.node if codes in n.input and n.op_type == "Reshape")
        assert [n.op_type for n in graph.node if reshaped in n.input] == ["MatMulNBits"]
    else:
        assert [i.name for i in graph.input] == ["pixel_values"]


def test_encoder_decoder_models_are_refused():
    from types import SimpleNamespace

    from zoo.export import _outputs_for

    class MarianMTModel:  # what matters: the class name ends with "Model", the config is encoder-decoder
        config = SimpleNamespace(is_encoder_decoder=True)

    with pytest.raises(ExportError, match="encoder-decoder"):
        _outputs_for(MarianMTModel())
    MarianMTModel.config = SimpleNamespace(is_encoder_decoder=False)
    assert _outputs_for(MarianMTModel()) == ("last_hidden_state",)
