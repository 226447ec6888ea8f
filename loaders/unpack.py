"""zoo checkpoint -> plain dense checkpoint (safetensors + config.json) that any tool can read."""

from __future__ import annotations

from pathlib import Path

from formats import Checkpoint, CheckpointWriter, companion_files
from formats.memory import release_freed_memory
from formats.writer import DEFAULT_MAX_SHARD_BYTES

from .structure import padded


def unpack(
    src: str | Path, out: str | Path, *, overwrite: bool = False, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> Path:
    """Decode every compressed module to its original dtype and write a dense checkpoint.
    The checkpoint is verified (manifest, tensors, sha256) before anything is written. A pruned
    model's layers are zero-padded back to the shapes its config.json describes (same outputs)."""
    ckpt = Checkpoint.open(src)
    s = ckpt.manifest.structure
    with CheckpointWriter(out, overwrite=overwrite, max_shard_bytes=max_shard_bytes) as writer:
        for name, tensor in ckpt.dense_tensors():
            if s is not None:
                tensor = padded(name, tensor, s.attention_heads, s.intermediate_sizes, s.heads_before,
                                s.intermediate_size_before)
            writer.add(name, tensor)
            release_freed_memory()
        writer.close_weights()
        for path in companion_files(ckpt.path):
            writer.copy_file(path)
        config = {k: v for k, v in ckpt.config.items() if k != "quantization_config"}
        writer.write_json("config.json", config, record=False)
        return writer.commit()
