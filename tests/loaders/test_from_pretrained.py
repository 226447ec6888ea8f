"""Loading zoo checkpoints through transformers: the three modes against the unpacked dense model,
save_pretrained round trips, dequantize, zoo.from_pretrained's class choice, and typed errors for
bad input. The real all-MiniLM-L6-v2 (marked slow) for numbers that mean something, a tiny random
BERT for structure."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from zoo.formats import Checkpoint, FormatError, SafetensorsDir, ZooError
from zoo.loaders import MODES, ModeError, ZooConfig, ZooEmbedding, ZooLinear, ZooModule
from zoo.loaders.kernels import Int8Matmul

import zoo
from zoo import loaders

RECIPES = ["int8", "4bit", "2of4", "4bit-2of4", "binary", "ternary", "kmeans-4bit", "kmeans-1bit"]
KERNEL_ON_CPU = ["int8", "4bit", "4bit-2of4", "binary", "ternary"]  # codecs on an integer grid
NO_KERNEL_ON_CPU = ["2of4", "kmeans-4bit", "kmeans-1bit"]  # fp16 kept values, k-means centroids

SENTENCES = [
    "a gripping, beautifully shot film",
    "dull and far too long",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "zoo stores compressed transformers in safetensors",
]
TINY_IDS = torch.tensor([[101, 2023, 2023, 7592, 1037, 102], [101, 7592, 999, 3231, 102, 0]])


def run(model, **inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.float() - b.float()).abs().max().item()


def first_token_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest cosine similarity over the batch between sentence vectors (first token)."""
    return F.cosine_similarity(a[:, 0].float(), b[:, 0].float(), dim=-1).min().item()


def zoo_modules(model) -> dict[str, ZooModule]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ZooModule)}


def assert_clean_loading(info) -> None:
    assert not info["missing_keys"], sorted(info["missing_keys"])[:5]
    assert not info["unexpected_keys"], sorted(info["unexpected_keys"])[:5]
    assert not info["mismatched_keys"], sorted(info["mismatched_keys"])[:5]


@pytest.fixture(scope="module")
def minilm_batch(minilm_dir):
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(minilm_dir)(SENTENCES, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir, compressed_models, minilm_batch):
    """recipe -> hidden states of the dense model `loaders.unpack` makes of MiniLM compressed with it."""
    from transformers import AutoModel

    cache: dict[str, torch.Tensor] = {}

    def reference(recipe: str) -> torch.Tensor:
        if recipe not in cache:
            cache[recipe] = run(AutoModel.from_pretrained(compressed_models.dense(minilm_dir, recipe)), **minilm_batch)
        return cache[recipe]

    return reference


# -- the real all-MiniLM-L6-v2 ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_minilm_loads_in_plain_transformers_and_matches_the_unpacked_model(
    recipe, minilm_dir, compressed_models, minilm_batch, minilm_reference
):
    from transformers import AutoModel

    path = compressed_models.path(minilm_dir, recipe)
    ckpt = Checkpoint.open(path)
    model, info = AutoModel.from_pretrained(path, output_loading_info=True)
    assert_clean_loading(info)
    rebuilt = zoo_modules(model)
    assert set(rebuilt) == set(ckpt.manifest.modules) and len(rebuilt) == 40  # 36 block linears + 3 embeddings + pooler
    assert all(type(m) in (ZooLinear, ZooEmbedding) and m.mode == "materialize" for m in rebuilt.values())
    name = "encoder.layer.3.intermediate.dense"
    assert torch.equal(model.get_submodule(name).weight, ckpt.decode(name))
    assert model.config.quantization_config.manifest == ckpt.manifest

    reference = minilm_reference(recipe)
    assert max_diff(run(model, **minilm_batch), reference) <= 1e-4

    packed = loaders.load(path, mode="packed")
    layers = zoo_modules(packed)
    assert len(layers) == 40 and all(m.mode == "packed" for m in layers.values())
    # packed keeps only the stored tensors: no dense copy of any weight
    assert not any(hasattr(m, "weight_dense") for m in layers.values())
    assert not any(n.endswith(".weight") and n.removesuffix(".weight") in layers for n, _ in packed.named_buffers())
    assert max_diff(run(packed, **minilm_batch), reference) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("recipe", KERNEL_ON_CPU)
def test_minilm_kernel_mode_runs_int8_matmuls_close_to_materialize(
    recipe, minilm_dir, compressed_models, minilm_batch, minilm_reference
):
    model = zoo.from_pretrained(compressed_models.path(minilm_dir, recipe), mode="kernel")
    layers = zoo_modules(model)
    assert len(layers) == 40 and all(m.mode == "kernel" for m in layers.values())
    assert all(isinstance(m.kernel, Int8Matmul) for m in layers.values() if isinstance(m, ZooLinear))
    assert not any(hasattr(m, "weight_dense") for m in layers.values())
    out, reference = run(model, **minilm_batch), minilm_reference(recipe)
    assert torch.isfinite(out).all()
    # activations are quantized to int8 per token: close, but really not the dense computation
    assert max_diff(out, reference) > 1e-5
    # measured, smallest of the 4 sentences (torch 2.13 CPU): int8 0.9966, 4bit 0.9963, 4bit-2of4 0.9972,
    # binary 0.9989, ternary 0.9970; max abs differences 0.07 (binary) to 4.0 (4bit)
    assert first_token_cos(out, reference) >= 0.99


# -- modes on a tiny random BERT --------------------------------------------------------------------


@pytest.mark.parametrize("recipe", NO_KERNEL_ON_CPU)
def test_kernel_mode_refuses_codecs_off_the_integer_grid(recipe, tiny_bert_dir, compressed_models):
    path = compressed_models.path(tiny_bert_dir, recipe)
    with pytest.raises(ModeError) as caught:
        zoo.from_pretrained(path, mode="kernel")
    error = caught.value
    assert isinstance(error, ZooError)
    assert "module encoder.layer." in str(error) and "no kernel on CPU" in str(error)
    assert "mode='materialize'" in error.hint and "mode='packed'" in error.hint
    # the fix the hint names works
    for mode in ("materialize", "packed"):
        assert len(zoo_modules(zoo.from_pretrained(path, mode=mode))) == len(Checkpoint.open(path).manifest.modules)


@pytest.mark.parametrize("recipe", KERNEL_ON_CPU)
def test_kernel_mode_serves_integer_grid_codecs(recipe, tiny_bert_dir, compressed_models):
    path = compressed_models.path(tiny_bert_dir, recipe)
    model = zoo.from_pretrained(path, mode="kernel")
    assert all(isinstance(m.kernel, Int8Matmul) for m in zoo_modules(model).values() if isinstance(m, ZooLinear))
    out = run(model, input_ids=TINY_IDS)
    reference = run(zoo.from_pretrained(path), input_ids=TINY_IDS)
    assert F.cosine_similarity(out.flatten(), reference.flatten(), dim=0) >= 0.99


def test_unknown_mode_is_refused_with_the_modes_listed(tiny_bert_dir, compressed_models):
    from transformers import AutoModel

    path = compressed_models.path(tiny_bert_dir, "4bit")
    for load in (
        lambda: zoo.from_pretrained(path, mode="fast"),
        lambda: loaders.load(path, mode="fast"),
        lambda: AutoModel.from_pretrained(path, quantization_config=ZooConfig(mode="fast")),
    ):
        with pytest.raises(ModeError, match="unknown mode 'fast'") as caught:
            load()
        assert all(mode in caught.value.hint for mode in MODES)


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`:UserWarning")  # it is how the mode is passed
def test_mode_can_be_chosen_through_plain_transformers(tiny_bert_dir, compressed_models, tmp_path):
    from transformers import AutoModel

    path = compressed_models.path(tiny_bert_dir, "4bit")
    model, info = AutoModel.from_pretrained(
        path, quantization_config=ZooConfig(mode="packed"), output_loading_info=True
    )
    assert_clean_loading(info)
    layers = zoo_modules(model)
    assert len(layers) == 16 and {m.mode for m in layers.values()} == {
        "packed"
    }  # 12 block linears, 3 embeddings, pooler
    # the load-time mode is never written back: the saved config holds the manifest only
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["quantization_config"]
    assert "mode" not in saved and saved["quant_method"] == "zoo"
    Checkpoint.open(tmp_path / "saved")  # pydantic, extra="forbid": a stray key would fail here


def test_bfloat16_loading_computes_in_bfloat16(tiny_bert_dir, compressed_models):
    """from_pretrained(dtype=bf16) gives runtime layers that compute in bf16, like the dense model."""
    from transformers import AutoModel

    path = compressed_models.path(tiny_bert_dir, "4bit")
    reference = run(
        AutoModel.from_pretrained(compressed_models.dense(tiny_bert_dir, "4bit"), dtype=torch.bfloat16),
        input_ids=TINY_IDS,
    )
    assert reference.dtype == torch.bfloat16
    for mode in ("materialize", "packed"):
        model = zoo.from_pretrained(path, mode=mode, dtype=torch.bfloat16)
        layer = model.encoder.layer[0].attention.self.query
        assert layer.weight.dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
        out = run(model, input_ids=TINY_IDS)
        assert out.dtype == torch.bfloat16 and max_diff(out, reference) <= 1e-4
    out = run(zoo.from_pretrained(path, mode="kernel", dtype=torch.bfloat16), input_ids=TINY_IDS)
    assert out.dtype == torch.bfloat16
    assert F.cosine_similarity(out.float().flatten(), reference.float().flatten(), dim=0) >= 0.99


@pytest.mark.parametrize("mode", MODES)
def test_to_dtype_moves_the_stored_tensors_without_casting_them(mode, tiny_bert_dir, compressed_models, tmp_path):
    """model.to(bf16) casts what the model computes with; the fp16 scales stay the checkpoint's bytes."""
    path = compressed_models.path(tiny_bert_dir, "4bit")
    expected = run(zoo.from_pretrained(path, mode=mode, dtype=torch.bfloat16), input_ids=TINY_IDS)
    model = zoo.from_pretrained(path, mode=mode).to(torch.bfloat16)
    stored = SafetensorsDir(path)
    for name, layer in zoo_modules(model).items():
        for key, tensor in layer.stored().items():
            original = stored.get(f"{name}.weight_{key}")
            assert tensor.dtype == original.dtype and torch.equal(tensor, original)
        if mode == "kernel" and isinstance(layer, ZooLinear):
            assert layer.kernel.row_scale.dtype == torch.float32
    out = run(model, input_ids=TINY_IDS)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
    model.save_pretrained(tmp_path / "bf16")
    Checkpoint.open(tmp_path / "bf16")
    assert torch.equal(run(zoo.from_pretrained(tmp_path / "bf16", mode=mode), input_ids=TINY_IDS), expected)


def test_kronecker_layers_run_as_factor_products_in_every_mode(
    tiny_bert_dir, compressed_models, tmp_path_factory, monkeypatch
):
    from zoo.formats.codecs import kronecker

    recipe = tmp_path_factory.mktemp("recipes") / "kron.yaml"
    recipe.write_text(
        "name: kron\ndescription: Kronecker factors for the word embeddings and block linears\nrules:\n"
        "  - {targets: [word_embeddings], kinds: [embedding], codec: {codec: kronecker, b_shape: [1, 4]}}\n"
        "  - codec: {codec: kronecker, b_shape: [8, 8], rank: 2}\n"
    )
    path = compressed_models.path(tiny_bert_dir, recipe)
    reference = run(loaders.load(compressed_models.dense(tiny_bert_dir, recipe)), input_ids=TINY_IDS)

    def no_dense(*args, **kwargs):
        raise AssertionError("a Kronecker layer built its dense matrix")

    for mode in ("materialize", "packed", "kernel"):
        model = zoo.from_pretrained(path, mode=mode)
        layers = zoo_modules(model)
        assert len(layers) == 13
        for layer in layers.values():  # the factors, never the dense weight
            assert not hasattr(layer, "weight_dense") and getattr(layer, "kernel", None) is None
            if mode != "packed":
                assert layer.kron_a.shape[0] == layer.codec.rank
        with monkeypatch.context() as patch:
            patch.setattr(kronecker, "kron_sum", no_dense)
            assert max_diff(run(model, input_ids=TINY_IDS), reference) <= 1e-4


EMBEDDING_RECIPES = {
    "int4-g32": "{codec: int, bits: 4, group_size: 32}",
    "kronecker": "{codec: kronecker, a_shape: [2, 8], rank: 2}",  # 30522 x 64 = (2 x 8) (x) (15261 x 8)
}


@pytest.mark.parametrize("codec", sorted(EMBEDDING_RECIPES))
def test_packed_embeddings_decode_only_the_rows_looked_up(
    codec, tiny_bert_dir, compressed_models, tmp_path_factory, monkeypatch
):
    from zoo.formats import codecs

    recipe = tmp_path_factory.mktemp("recipes") / f"emb-{codec}.yaml"
    recipe.write_text(
        f"name: emb-{codec}\ndescription: compressed word embeddings and block linears\nrules:\n"
        f"  - targets: ['word_embeddings']\n    kinds: [embedding]\n    codec: {EMBEDDING_RECIPES[codec]}\n"
        "  - codec: {codec: int, bits: 4, group_size: 32}\n"
    )
    path = compressed_models.path(tiny_bert_dir, recipe)
    assert Checkpoint.open(path).manifest.modules["embeddings.word_embeddings"].kind == "embedding"
    reference = run(loaders.load(compressed_models.dense(tiny_bert_dir, recipe)), input_ids=TINY_IDS)

    materialized = zoo.from_pretrained(path)
    embedding = materialized.embeddings.word_embeddings
    assert type(embedding) is ZooEmbedding and embedding.mode == "materialize"
    assert max_diff(run(materialized, input_ids=TINY_IDS), reference) <= 1e-5

    packed = zoo.from_pretrained(path, mode="packed")
    embedding = packed.embeddings.word_embeddings
    assert type(embedding) is ZooEmbedding and not hasattr(embedding, "weight_dense")
    table_shape = (embedding.num_embeddings, embedding.embedding_dim)
    rows_asked, full_decodes = [], []
    decode_rows, decode_checked = codecs.decode_rows, codecs.decode_checked

    def spy_rows(tensors, spec, shape, rows):
        rows_asked.append(rows.clone())
        return decode_rows(tensors, spec, shape, rows)

    def spy_full(tensors, spec, shape):
        full_decodes.append(tuple(shape))
        return decode_checked(tensors, spec, shape)

    monkeypatch.setattr(codecs, "decode_rows", spy_rows)
    monkeypatch.setattr(codecs, "decode_checked", spy_full)
    out = run(packed, input_ids=TINY_IDS)
    monkeypatch.undo()
    assert len(rows_asked) == 1 and torch.equal(rows_asked[0], torch.unique(TINY_IDS))
    assert table_shape not in full_decodes and len(full_decodes) >= 12  # the linears decode per forward
    assert max_diff(out, reference) <= 1e-5


# -- save_pretrained, dequantize ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "mode"), [("4bit-2of4", "materialize"), ("kmeans-1bit", "packed")])
def test_minilm_save_pretrained_writes_the_compact_tensors_back(
    recipe, mode, minilm_dir, compressed_models, minilm_batch, tmp_path
):
    path = compressed_models.path(minilm_dir, recipe)
    model = loaders.load(path, mode=mode)
    model.save_pretrained(tmp_path / "first")
    again, info = loaders.load(tmp_path / "first", mode=mode, output_loading_info=True)
    assert_clean_loading(info)
    assert len(zoo_modules(again)) == 40
    again.save_pretrained(tmp_path / "second")

    first_file = (tmp_path / "first" / "model.safetensors").read_bytes()
    assert first_file == (tmp_path / "second" / "model.safetensors").read_bytes()

    original, saved = SafetensorsDir(path), SafetensorsDir(tmp_path / "first")
    dropped = set(original.names()) - set(saved.names())
    assert set(saved.names()) <= set(original.names())
    # the only tensor not written back is one the model class does not keep: a non-persistent buffer
    assert dropped == {"embeddings.position_ids"}
    assert "embeddings.position_ids" not in model.state_dict()
    assert "embeddings.position_ids" in dict(model.named_buffers())
    for name in saved.names():
        ours, theirs = saved.get(name), original.get(name)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), name
    # still compact: the compressed modules were not decoded on the way out
    assert len(first_file) <= sum((path / f).stat().st_size for f in original.files)

    reopened = Checkpoint.open(tmp_path / "first")
    assert reopened.manifest.modules == Checkpoint.open(path).manifest.modules
    assert reopened.manifest.files == {}  # transformers wrote the files after config.json
    assert torch.equal(run(again, **minilm_batch), run(model, **minilm_batch))


@pytest.mark.slow
def test_minilm_dequantize_gives_plain_linears_with_the_same_outputs(
    minilm_dir, compressed_models, minilm_batch, tmp_path
):
    from transformers import AutoModel

    path = compressed_models.path(minilm_dir, "4bit-2of4")
    modules = list(Checkpoint.open(path).manifest.modules)
    model = AutoModel.from_pretrained(path)
    reference = run(model, **minilm_batch)
    plain = model.dequantize()
    assert not zoo_modules(plain)
    kinds = Checkpoint.open(path).manifest.modules
    assert all(
        type(plain.get_submodule(m)) is {"linear": torch.nn.Linear, "embedding": torch.nn.Embedding}[kinds[m].kind]
        for m in modules
    )
    assert plain.get_submodule(modules[0]).weight.dtype == torch.float32
    assert not hasattr(plain.config, "quantization_config") and not getattr(plain, "is_quantized", False)
    assert getattr(plain, "hf_quantizer", None) is None
    assert torch.equal(run(plain, **minilm_batch), reference)

    plain.save_pretrained(tmp_path / "plain")
    assert "quantization_config" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    dense_names = set(SafetensorsDir(compressed_models.dense(minilm_dir, "4bit-2of4")).names())
    assert set(SafetensorsDir(tmp_path / "plain").names()) == dense_names - {"embeddings.position_ids"}
    reloaded, info = AutoModel.from_pretrained(tmp_path / "plain", output_loading_info=True)
    assert_clean_loading(info)
    assert torch.equal(run(reloaded, **minilm_batch), reference)


def test_dequantize_after_save_pretrained(tiny_bert_dir, compressed_models, tmp_path):
    """save_pretrained leaves config.dtype a string ('float32'), which transformers hands to dequantize."""
    path = compressed_models.path(tiny_bert_dir, "4bit-2of4")
    model = zoo.from_pretrained(path, mode="packed")
    reference = run(model, input_ids=TINY_IDS)
    model.save_pretrained(tmp_path / "saved")
    plain = model.dequantize()
    layer = plain.encoder.layer[1].output.dense
    assert type(layer) is torch.nn.Linear and layer.weight.dtype == torch.float32
    assert torch.equal(run(plain, input_ids=TINY_IDS), reference)


# -- zoo.from_pretrained: class and task ------------------------------------------------------------


@pytest.mark.slow
def test_minilm_class_follows_config_or_task(minilm_dir, compressed_models, minilm_batch, minilm_reference):
    from transformers import BertForSequenceClassification, BertModel

    path = compressed_models.path(minilm_dir, "4bit-2of4")
    model = zoo.from_pretrained(path)
    assert type(model) is BertModel  # config.json: "architectures": ["BertModel"]

    classifier, info = zoo.from_pretrained(path, task="text-classification", mode="packed", output_loading_info=True)
    assert type(classifier) is BertForSequenceClassification
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}  # the new head, and nothing else
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    layers = zoo_modules(classifier)
    assert len(layers) == 40 and all(n.startswith("bert.") for n in layers)
    assert {m.mode for m in layers.values()} == {"packed"}
    assert max_diff(run(classifier.bert, **minilm_batch), minilm_reference("4bit-2of4")) <= 1e-4


def test_unknown_task_is_refused(tiny_bert_dir, compressed_models):
    with pytest.raises(ZooError, match="unknown task 'summarize-it'") as caught:
        zoo.from_pretrained(compressed_models.path(tiny_bert_dir, "4bit"), task="summarize-it")
    assert "text-classification" in caught.value.hint


def test_a_dense_directory_loads_plainly_and_refuses_other_modes(tiny_bert_dir):
    from transformers import BertModel

    model = zoo.from_pretrained(tiny_bert_dir)
    assert type(model) is BertModel and not zoo_modules(model)
    assert not getattr(model, "is_quantized", False)
    for mode in ("packed", "kernel"):
        with pytest.raises(ZooError, match=f"not a zoo checkpoint, so mode='{mode}' does not apply"):
            zoo.from_pretrained(tiny_bert_dir, mode=mode)


def test_zoo_never_quantizes_while_loading(tiny_bert_dir):
    from transformers import AutoModel

    with pytest.raises(ZooError, match="not a zoo checkpoint") as caught:
        AutoModel.from_pretrained(tiny_bert_dir, quantization_config=ZooConfig())
    assert "zoo compress" in caught.value.hint


def test_another_quantization_method_is_left_to_transformers(tiny_bert_dir, tmp_path):
    """zoo.from_pretrained on a bitsandbytes/GPTQ/... checkpoint does what plain transformers does,
    instead of forcing a ZooConfig onto it."""
    from transformers import AutoModel

    path = shutil.copytree(tiny_bert_dir, tmp_path / "bnb")
    edit_config(
        path, lambda config: config.update(quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True})
    )

    def outcome(load) -> str:
        try:
            return type(load()).__name__
        except Exception as exc:  # noqa: BLE001 - whatever transformers does, zoo must do the same
            return f"{type(exc).__name__}: {exc}"

    ours = outcome(lambda: zoo.from_pretrained(path))
    assert ours == outcome(lambda: AutoModel.from_pretrained(path)) and "ZooConfig" not in ours
    with pytest.raises(ZooError, match="not a zoo checkpoint, so mode='packed' does not apply"):
        zoo.from_pretrained(path, mode="packed")


def test_sharded_checkpoints_load_and_save_sharded(tiny_bert_dir, compressed_models, tmp_path):
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    sharded = write_compact(
        resolve_model(str(tiny_bert_dir)), load_recipe("4bit"), tmp_path / "sharded", max_shard_bytes=300_000
    ).path
    assert len(SafetensorsDir(sharded).files) > 2
    model, info = zoo.from_pretrained(sharded, mode="packed", output_loading_info=True)
    assert_clean_loading(info)
    assert len(zoo_modules(model)) == 16
    single = run(zoo.from_pretrained(compressed_models.path(tiny_bert_dir, "4bit")), input_ids=TINY_IDS)
    assert torch.equal(run(model, input_ids=TINY_IDS), single)
    model.save_pretrained(tmp_path / "resaved", max_shard_size="300KB")
    assert (tmp_path / "resaved" / "model.safetensors.index.json").is_file()
    Checkpoint.open(tmp_path / "resaved")
    assert torch.equal(run(zoo.from_pretrained(tmp_path / "resaved"), input_ids=TINY_IDS), single)


# -- bad input: typed errors naming the module --------------------------------------------------------


@pytest.fixture
def tiny_copy(tiny_bert_dir, compressed_models, tmp_path):
    """A private copy of the tiny BERT compressed with 4bit, to damage."""
    return shutil.copytree(compressed_models.path(tiny_bert_dir, "4bit"), tmp_path / "copy")


def edit_config(path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def test_manifest_shape_that_does_not_match_the_tensors_fails_before_loading(tiny_copy):
    from transformers import AutoModel

    def widen(config):
        config["quantization_config"]["modules"]["encoder.layer.1.intermediate.dense"]["shape"] = [160, 128]

    edit_config(tiny_copy, widen)
    with pytest.raises(FormatError, match=r"module encoder\.layer\.1\.intermediate\.dense: tensor .* needs \[10240\]"):
        AutoModel.from_pretrained(tiny_copy)


def test_tensor_missing_from_the_file_fails_naming_it(tiny_copy):
    from transformers import AutoModel

    file = tiny_copy / "model.safetensors"
    with safe_open(file, "pt") as f:
        metadata = f.metadata()
    tensors = load_file(file)
    del tensors["encoder.layer.0.output.dense.weight_scale"]
    save_file(tensors, file, metadata=metadata)
    with pytest.raises(
        FormatError,
        match=r"module encoder\.layer\.0\.output\.dense: tensor "
        r"'encoder\.layer\.0\.output\.dense\.weight_scale' named by the manifest is missing",
    ):
        AutoModel.from_pretrained(tiny_copy)


def test_manifest_module_the_model_class_lacks_is_refused(tiny_bert_dir, compressed_models, tmp_path_factory):
    from transformers import AutoModel

    recipe = tmp_path_factory.mktemp("recipes") / "pooler.yaml"
    recipe.write_text(
        "name: pooler\ndescription: int8 pooler\nrules:\n"
        "  - targets: ['^pooler\\.']\n    codec: {codec: int, bits: 8, group_size: null}\n"
    )
    path = compressed_models.path(tiny_bert_dir, recipe)
    assert list(Checkpoint.open(path).manifest.modules) == ["pooler.dense"]
    assert type(AutoModel.from_pretrained(path).pooler.dense) is ZooLinear
    with pytest.raises(
        FormatError, match="module pooler.dense named by the manifest does not exist in BertModel"
    ) as caught:
        AutoModel.from_pretrained(path, add_pooling_layer=False)
    assert "zoo.from_pretrained" in caught.value.hint


def test_quantization_config_without_a_manifest_is_refused(tiny_copy):
    from transformers import AutoModel

    edit_config(tiny_copy, lambda config: config.update(quantization_config={"quant_method": "zoo"}))
    with pytest.raises(ZooError, match="must hold its manifest"):
        AutoModel.from_pretrained(tiny_copy)
