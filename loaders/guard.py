"""What a load of a local directory checks before transformers allocates or reads anything, so that a broken or
hostile checkpoint fails with a typed error instead of loading random layers or exhausting memory.

- A zoo checkpoint is opened as formats.Checkpoint does: manifest, every safetensors header, each module's
  tensors against its codec's layout, the shards' manifest hash, the files' sizes (and, with verify, sha256).
- A directory whose shards zoo wrote but whose config.json lost its zoo quantization_config is refused:
  transformers would load it with every compressed layer randomly initialised.
- config.json's sizes are bounded by the weights: transformers builds whatever the config says before a
  weight is read, so `num_hidden_layers: 1e12` would allocate until the machine dies. Every layer count must
  be at most the layers the weight names hold, and every width at most the largest dimension a stored
  tensor (or compressed module) has."""

from __future__ import annotations

import re
from pathlib import Path

from zoo.formats import Checkpoint, SafetensorsDir
from zoo.formats.errors import FormatError
from zoo.formats.manifest import META_MANIFEST_SHA256, QUANT_METHOD
from zoo.formats.safetensors_dir import INDEX_FILE, SINGLE_FILE

# config.json keys that size a model (transformers' names across BERT, T5, BART/Marian, GPT-2, ViT, wav2vec2)
LAYER_KEYS = (
    "num_hidden_layers",
    "num_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
    "n_layer",
    "num_hidden_groups",
)
WIDTH_KEYS = (
    "hidden_size",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "num_attention_heads",
    "type_vocab_size",
    "embedding_size",
    "num_key_value_heads",
    "d_model",
    "d_ff",
    "d_kv",
    "num_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "n_embd",
    "n_head",
    "n_inner",
    "n_positions",
    "num_conv_pos_embeddings",
)
_INDEX = re.compile(r"\.(\d+)\.")


def check_local(path: Path, config: dict, *, verify: bool = False) -> None:
    q = config.get("quantization_config")
    zoo = isinstance(q, dict) and q.get("quant_method") == QUANT_METHOD
    if zoo:
        ckpt = Checkpoint.open(path, verify=verify)
        weights, shapes = ckpt.weights, [tuple(e.shape) for e in ckpt.manifest.modules.values()]
    elif (path / SINGLE_FILE).is_file() or (path / INDEX_FILE).is_file():
        weights, shapes = SafetensorsDir(path), []
        if any(META_MANIFEST_SHA256 in weights.metadata(file) for file in weights.files):
            named = f"quant_method {q.get('quant_method')!r}" if isinstance(q, dict) else "no quantization_config"
            raise FormatError(
                f"{path}: its weight files were written by zoo (their metadata names a zoo manifest), but "
                f"config.json has {named}; loading it would leave every compressed layer randomly initialised",
                hint="restore the checkpoint's config.json (pull or compress it again)",
            )
    else:
        return  # not safetensors: transformers' business (zoo never reads pickle)
    check_config_sizes(path, config, weights, shapes)


def check_config_sizes(path: Path, config: dict, weights: SafetensorsDir, shapes: list[tuple[int, ...]]) -> None:
    """Refuse a config.json whose layer counts or widths exceed what the weights hold (see the module doc)."""
    names = weights.names()
    layers = max((int(i) + 1 for name in names for i in _INDEX.findall(name)), default=0)
    widest = max((d for name in names for d in weights.shape(name)), default=0)
    widest = max([widest, *(d for shape in shapes for d in shape)])
    for section, values in _sections(config):
        for key in (*LAYER_KEYS, *WIDTH_KEYS):
            if key == "num_hidden_layers" and "num_hidden_groups" in values:
                continue  # ALBERT shares its layers: the count is a loop, the groups are what is allocated
            value = values.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, int):
                continue  # not a count: transformers' own validation speaks (and load() types its error)
            limit = layers if key in LAYER_KEYS else widest
            if value < 0 or (limit and value > limit):
                what = (
                    f"the {limit} layer{'s' if limit != 1 else ''} its weights hold"
                    if key in LAYER_KEYS
                    else f"the largest dimension of any weight ({limit})"
                )
                raise FormatError(
                    f"{path}/config.json: {section}{key} = {value:,} exceeds {what}",
                    hint="config.json was edited or belongs to another model; restore it",
                )


def _sections(config: dict):
    """config.json and the sub-configs it nests (text_config, encoder, decoder...), one level down."""
    yield "", config
    for key, value in config.items():
        if isinstance(value, dict) and key != "quantization_config":
            yield f"{key}.", value
