"""zoo checkpoint -> plain dense checkpoint (safetensors + config.json) that any tool can read."""

from __future__ import annotations

from pathlib import Path

from zoo.formats import Checkpoint, CheckpointWriter, companion_files
from zoo.formats.codecs.base import DTYPES
from zoo.formats.memory import release_freed_memory
from zoo.formats.writer import DEFAULT_MAX_SHARD_BYTES

from .structure import padded


def unpack(
    src: str | Path, out: str | Path, *, overwrite: bool = False, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> Path:
    """Decode every compressed module to its original dtype (its manifest entry's) and write a dense checkpoint,
    the other float tensors in the model's dtype (config.json's), as the source checkpoint held them.
    The checkpoint is verified (manifest, tensors, sha256) before anything is written. A pruned
    model's layers are zero-padded back to the shapes its config.json describes (same outputs)."""
    ckpt = Checkpoint.open(src)
    s = ckpt.manifest.structure
    # tensors a recipe stored in a smaller float dtype (norms, biases, heads) go back to the model's own dtype:
    # config.json's, or else the one every compressed module had
    originals = {e.dtype for e in ckpt.manifest.modules.values()}
    named = (
        ckpt.config.get("dtype") or ckpt.config.get("torch_dtype") or (originals.pop() if len(originals) == 1 else "")
    )
    dtype = DTYPES.get(str(named))
    # decoded modules already have the dtype their manifest entry records; only plain tensors are cast
    decoded = {f"{m}.weight" for m, e in ckpt.manifest.modules.items()}
    decoded |= {f"{t}.weight" for e in ckpt.manifest.modules.values() for t in e.tied}
    with CheckpointWriter(out, overwrite=overwrite, max_shard_bytes=max_shard_bytes) as writer:
        for name, tensor in ckpt.dense_tensors():
            if dtype is not None and name not in decoded and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            if s is not None:
                tensor = padded(
                    name, tensor, s.attention_heads, s.intermediate_sizes, s.heads_before, s.intermediate_size_before
                )
            writer.add(name, tensor)
            release_freed_memory()
        writer.close_weights()
        for name in companion_files(ckpt.path):
            writer.copy_file(ckpt.path / name, name)
        config = {k: v for k, v in ckpt.config.items() if k != "quantization_config"}
        writer.write_json("config.json", config, record=False)
        return writer.commit(mark="zoo unpack")
