"""Beyond BERT: tiny random ViT, wav2vec2 (classification and CTC), Marian and T5 (structure only:
their weights mean nothing), compressed with the built-in recipes and loaded back through the Auto
classes in every mode, against the dense model `loaders.unpack` makes of the same checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from zoo.formats import Checkpoint, SafetensorsDir
from zoo.loaders import ModeError, ZooEmbedding, ZooLinear, ZooModule
from zoo.loaders.kernels import Int8Matmul
from zoo.loaders.runtime import ZooConv

import zoo
from zoo import loaders
from zoo.compress import write_compact
from zoo.recipes import load_recipe
from zoo.resolve import resolve_model


@dataclass(frozen=True)
class Arch:
    cls: str  # transformers class the config names
    auto: str  # the Auto class to load it with
    task: str  # zoo.from_pretrained's task for that Auto class
    modules: int  # what the built-in recipes compress: the blocks' linears, embeddings, projections
    tied: int = 0  # modules sharing a compressed module's weight (T5 and Marian's embed_tokens and lm_head)

    def build(self, name: str):
        import transformers as T

        torch.manual_seed(0)
        if name == "vit":
            config = T.ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                num_labels=3,
            )
        elif name.startswith("wav2vec2"):
            config = T.Wav2Vec2Config(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                conv_dim=(32, 32),
                conv_kernel=(8, 8),
                conv_stride=(4, 4),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2,
                vocab_size=32,
                num_labels=3,
                classifier_proj_size=32,
            )
        elif name == "marian":
            config = T.MarianConfig(
                vocab_size=100,
                d_model=64,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=128,
                decoder_ffn_dim=128,
                max_position_embeddings=64,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
                forced_eos_token_id=None,
                init_std=0.05,
            )  # input-dependent greedy tokens
        else:
            config = T.T5Config(
                vocab_size=100,
                d_model=64,
                d_ff=128,
                d_kv=32,
                num_layers=2,
                num_heads=2,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        return getattr(T, self.cls)(config)

    def inputs(self) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        if self.auto == "AutoModelForImageClassification":
            return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
        if self.cls.startswith("Wav2Vec2"):
            return {"input_values": torch.randn(2, 800, generator=g)}
        ids = torch.randint(2, 100, (2, 7), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": ids[:, :5]}


ARCHS = {  # ViT's position embeddings are a Parameter, not an nn.Embedding: they stay fp16 with its patch conv
    "vit": Arch("ViTForImageClassification", "AutoModelForImageClassification", "image-classification", 2 * 6),
    "wav2vec2-cls": Arch(
        "Wav2Vec2ForSequenceClassification", "AutoModelForAudioClassification", "audio-classification", 2 * 6 + 1
    ),  # + the feature projection
    "wav2vec2-ctc": Arch("Wav2Vec2ForCTC", "AutoModelForCTC", "automatic-speech-recognition", 2 * 6 + 1),
    # + the shared embeddings, stored once for the encoder's and decoder's embed_tokens and the lm_head
    "marian": Arch("MarianMTModel", "AutoModelForSeq2SeqLM", "translation", 2 * 6 + 2 * 10 + 1, tied=3),
    "t5": Arch(
        "T5ForConditionalGeneration", "AutoModelForSeq2SeqLM", "text2text-generation", 2 * 6 + 2 * 10 + 1, tied=3
    ),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """arch name -> a saved tiny random model of it, made on first use."""
    root = tmp_path_factory.mktemp("arch-sources")
    made: dict[str, Path] = {}

    def source(name: str) -> Path:
        if name not in made:
            made[name] = root / name
            ARCHS[name].build(name).save_pretrained(made[name])
        return made[name]

    return source


@pytest.fixture(scope="module")
def checkpoints(sources, tmp_path_factory):
    """(arch, recipe) -> (zoo checkpoint, its unpacked dense model), made on first use."""
    root = tmp_path_factory.mktemp("arch-compressed")
    made: dict[tuple[str, str], tuple[Path, Path]] = {}

    def checkpoint(name: str, recipe: str) -> tuple[Path, Path]:
        if (name, recipe) not in made:
            out = root / f"{name}-{Path(recipe).stem}"
            write_compact(resolve_model(str(sources(name))), load_recipe(recipe), out)
            made[name, recipe] = out, loaders.unpack(out, root / f"{out.name}-dense")
        return made[name, recipe]

    return checkpoint


def outputs(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, last hidden state) of an eval forward pass."""
    model.eval()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    hidden = out.decoder_hidden_states if "decoder_input_ids" in inputs else out.hidden_states
    return out.logits, hidden[-1]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


def rebuilt(model) -> dict[str, ZooModule]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ZooModule)}


@pytest.mark.parametrize("recipe", ["4bit", "int8"])
@pytest.mark.parametrize("name", sorted(ARCHS))
def test_architecture_loads_in_every_mode(name, recipe, checkpoints):
    import transformers

    arch = ARCHS[name]
    path, dense_dir = checkpoints(name, recipe)
    manifest = Checkpoint.open(path).manifest
    assert len(manifest.modules) == arch.modules
    inputs = arch.inputs()
    auto = getattr(transformers, arch.auto)
    dense = auto.from_pretrained(dense_dir)
    assert type(dense).__name__ == arch.cls
    ref_logits, ref_hidden = outputs(dense, inputs)

    for mode in ("materialize", "packed"):
        model, info = zoo.from_pretrained(path, mode=mode, output_loading_info=True)
        assert type(model).__name__ == arch.cls
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        layers = rebuilt(model)
        assert len(layers) == len(manifest.modules) + arch.tied > 0
        assert sum(m.owner is not None for m in layers.values()) == arch.tied
        assert all(type(m) in (ZooLinear, ZooEmbedding) and m.mode == mode for m in layers.values())
        logits, hidden = outputs(model, inputs)
        assert (logits - ref_logits).abs().max() <= 1e-4 and (hidden - ref_hidden).abs().max() <= 1e-4

    # plain transformers, through the Auto class of the task, and zoo's task name for it
    model, info = auto.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert len(rebuilt(model)) == len(manifest.modules) + arch.tied
    assert torch.equal(outputs(model, inputs)[0], outputs(zoo.from_pretrained(path, task=arch.task), inputs)[0])

    model = zoo.from_pretrained(path, mode="kernel")
    assert all(m.mode == "kernel" for m in rebuilt(model).values())
    assert all(isinstance(m.kernel, Int8Matmul) for m in rebuilt(model).values() if isinstance(m, ZooLinear))
    logits, hidden = outputs(model, inputs)
    assert torch.isfinite(logits).all() and not torch.equal(logits, ref_logits)  # int8 activations really ran
    assert cos(hidden, ref_hidden) >= 0.99 and cos(logits, ref_logits) >= 0.99


@pytest.mark.parametrize("mode", ["materialize", "packed", "kernel"])
@pytest.mark.parametrize("name", ["marian", "t5"])
def test_seq2seq_generate_gives_the_dense_models_tokens(name, mode, checkpoints):
    path, dense_dir = checkpoints(name, "int8")  # int4 shared embeddings make a tiny random model ignore its input
    ids = torch.tensor([[5, 17, 42, 8, 33, 1], [9, 23, 4, 61, 1, 0]])
    # a random model's favourite token is pad: suppress it so the tokens depend on the input
    settings = {
        "attention_mask": (ids != 0).long(),
        "max_new_tokens": 8,
        "min_new_tokens": 8,
        "do_sample": False,
        "num_beams": 1,
        "suppress_tokens": [0],
    }
    dense = loaders.load(dense_dir).eval()
    expected = dense.generate(ids, **settings)
    model = zoo.from_pretrained(path, mode=mode).eval()
    assert len(rebuilt(model)) == ARCHS[name].modules + ARCHS[name].tied
    embeddings = model.get_input_embeddings()  # T5's shared; Marian's encoder embed_tokens, which shares model.shared
    assert type(model.lm_head) is ZooLinear and model.lm_head.owner is (embeddings.owner or embeddings)  # stored once
    tokens = model.generate(ids, **settings)
    assert tokens.shape == expected.shape == (2, 1 + 8) and not torch.equal(expected[0], expected[1])
    if mode != "kernel":  # kernel mode quantizes activations: a near tie may go the other way
        assert torch.equal(tokens, expected)


def test_vit_save_pretrained_writes_the_checkpoint_layout_back(checkpoints, tmp_path):
    """transformers renames ViT's keys on load and back on save: the stored tensors follow both ways."""
    from transformers import AutoModelForImageClassification

    path, _ = checkpoints("vit", "4bit")
    model = zoo.from_pretrained(path)
    assert "vit.layers.0.attention.q_proj" in rebuilt(model)  # the model's name for ...attention.attention.query
    model.save_pretrained(tmp_path / "saved")
    original, saved = SafetensorsDir(path), SafetensorsDir(tmp_path / "saved")
    assert sorted(saved.names()) == sorted(original.names())
    assert all(torch.equal(saved.get(n), original.get(n)) for n in saved.names())
    Checkpoint.open(tmp_path / "saved")
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "saved")
    inputs = ARCHS["vit"].inputs()
    assert torch.equal(outputs(again, inputs)[0], outputs(model, inputs)[0])


def test_vit_compresses_under_its_checkpoint_names(sources, tmp_path):
    """transformers 5 renames ViT's keys on load; the manifest keeps the checkpoint's names."""
    result = write_compact(resolve_model(str(sources("vit"))), load_recipe("4bit"), tmp_path / "vit")
    assert len(result.manifest.modules) == 12
    assert "vit.encoder.layer.0.attention.attention.query" in result.manifest.modules


def test_wav2vec2_feature_encoder_convolutions(sources, tmp_path_factory, compressed_models):
    recipe = tmp_path_factory.mktemp("recipes") / "conv.yaml"
    recipe.write_text(
        "name: conv\ndescription: int8 feature-encoder convolutions\nrules:\n"
        "  - targets: ['feature_extractor\\.conv_layers\\.']\n    kinds: [conv]\n"
        "    codec: {codec: int, bits: 8, group_size: null}\n"
    )
    src = sources("wav2vec2-ctc")
    path = compressed_models.path(src, recipe)
    assert [e.kind for e in Checkpoint.open(path).manifest.modules.values()] == ["conv", "conv"]
    inputs = ARCHS["wav2vec2-ctc"].inputs()
    reference, _ = outputs(loaders.load(compressed_models.dense(src, recipe)), inputs)
    for mode in ("materialize", "packed"):
        model = zoo.from_pretrained(path, mode=mode)
        layers = rebuilt(model)
        assert len(layers) == 2 and all(type(m) is ZooConv for m in layers.values())
        assert (outputs(model, inputs)[0] - reference).abs().max() <= 1e-4
    with pytest.raises(
        ModeError, match=r"module wav2vec2\.feature_extractor\.conv_layers\.0\.conv .*no kernel for convolutions"
    ):
        zoo.from_pretrained(path, mode="kernel")
