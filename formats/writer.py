"""Atomic, sharded checkpoint writing.

Everything goes into a hidden sibling directory first (`.NAME.partial-XXXX`) and becomes the
output only in `commit()`, by rename on the same file system; an error or Ctrl-C before that
removes the partial directory, so a failed run never leaves a half-written model behind.

Tensors stream in one at a time and are flushed to a shard once the shard would exceed
`max_shard_bytes` (a single larger tensor gets a shard of its own). One shard is written as
`model.safetensors`; several as `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json`, as transformers names them. Never pickle.

Output is reproducible: safetensors 0.8 writes `__metadata__` keys in a random order (a Rust
HashMap; safetensors issue #584), so each shard's header is rewritten in canonical form (keys
sorted, same length) right after it is saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .errors import FormatError, OutputExistsError
from .manifest import QUANT_METHOD, FileInfo
from .memory import release_freed_memory
from .safetensors_dir import INDEX_FILE, SINGLE_FILE

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_file_mode() -> int:
    """The mode a new file gets from the umask (0666 & ~umask): what mkstemp and safetensors do not give."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_file_atomic(path: str | Path, data: str | bytes | Callable[[Path], None]) -> Path:
    """Write one file whole or not at all: into a hidden temporary file beside it (`.NAME.tmp-XXXX`) with the
    umask's mode, flushed to disk, then renamed over `path`; an error or Ctrl-C removes the temporary file.
    `data` is the text (UTF-8) or bytes, or a function that writes the temporary file, given its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            if not callable(data):
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if callable(data):
            data(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def header_sha256(path: Path) -> str:
    """sha256 of a safetensors file's header: its 8-byte length and the JSON that follows."""
    with open(path, "rb") as f:
        head = f.read(8)
        (size,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        return hashlib.sha256(head + f.read(min(size, 100 << 20))).hexdigest()


def file_info(path: Path) -> FileInfo:
    return FileInfo(sha256=sha256_file(path), nbytes=path.stat().st_size)


OUTPUT_MARK = ".zoo-output"  # in a dense directory zoo wrote (unpack, finetune): the files it wrote
_ZOO_ALSO_WRITES = {"config.json", INDEX_FILE, "README.md", ".eval_results", "card", OUTPUT_MARK}


def zoo_written(directory: Path) -> set[str] | None:
    """The top-level names zoo wrote into `directory`, or None when zoo did not write it: a zoo checkpoint
    lists its files in its manifest (config.json), a dense output of `zoo unpack` or `zoo finetune` in
    OUTPUT_MARK."""
    files = output_mark(directory).get("files")
    if not isinstance(files, list):
        try:
            config = json.loads((directory / "config.json").read_text())
            q = config.get("quantization_config") if isinstance(config, dict) else None
            files = q.get("files") if isinstance(q, dict) and q.get("quant_method") == QUANT_METHOD else None
        except (OSError, ValueError, UnicodeDecodeError):
            files = None
    if not isinstance(files, (list, dict)):
        return None
    return {str(name).split("/")[0] for name in files} | _ZOO_ALSO_WRITES


def write_output_mark(directory: Path, written_by: str, **facts: Any) -> None:
    """Mark a dense model directory as zoo's, naming what it holds, so a later --overwrite may replace it; `facts`
    (how it was made: a fine-tuned teacher's token length...) are kept beside."""
    files = sorted(p.name for p in directory.iterdir() if p.name != OUTPUT_MARK)
    mark = {"written_by": written_by, "files": files, **facts}
    (directory / OUTPUT_MARK).write_text(json.dumps(mark, indent=1) + "\n")


def output_mark(directory: Path) -> dict[str, Any]:
    """What write_output_mark recorded in `directory` ({} when nothing, or nothing readable)."""
    try:
        mark = json.loads((Path(directory) / OUTPUT_MARK).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return mark if isinstance(mark, dict) else {}


def ensure_writable(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse early (before any work) to write where a user's files would be lost. An existing output is
    replaced only with --overwrite, and then only when it is empty or holds nothing but what zoo wrote
    there before (a zoo checkpoint, or a dense model zoo marked): never the current directory, one above
    it, a file, or a directory with anything else in it."""
    out = Path(out_dir)
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise OutputExistsError(
            f"output {out_dir} is the current directory or holds it; zoo writes each model into a new directory",
            hint="name a new directory, e.g. --out minilm-4bit",
        )
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise OutputExistsError(f"output {out_dir} already exists", hint="pass --overwrite to replace it")
    if out.is_symlink() or not out.is_dir():
        raise OutputExistsError(
            f"output {out_dir} exists and is not a directory; --overwrite replaces directories only",
            hint="name a new directory",
        )
    names = sorted(p.name for p in out.iterdir())
    written = zoo_written(out) if names else set()
    foreign = names if written is None else [n for n in names if n not in written]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        what = (
            f"zoo did not write {out_dir} (it holds {shown})"
            if written is None
            else f"{out_dir} holds files zoo did not write ({shown})"
        )
        raise OutputExistsError(
            f"--overwrite refused: {what}",
            hint="--overwrite replaces only an empty directory or an earlier zoo output; "
            "name a new directory, or move those files away first",
        )


def replace_dir(staged: Path, out_dir: Path) -> Path:
    """Move a finished directory into place by rename (same file system); an old one is replaced."""
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
        os.replace(staged, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, out_dir)
    return out_dir


def canonicalize_header(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted; the length does not change."""
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        raw = f.read(size)
        header = json.loads(raw)
        meta = header.pop("__metadata__", None)
        if meta is None:
            return
        canonical = json.dumps(
            {"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        if len(canonical) != len(raw.rstrip(b" ")):  # same strings, reordered: same length, or a bug
            raise FormatError(f"cannot canonicalize the safetensors header of {path.name}")
        f.seek(8)
        f.write(canonical.ljust(size, b" "))


class CheckpointWriter:
    def __init__(
        self,
        out_dir: str | Path,
        *,
        overwrite: bool = False,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        metadata: dict[str, str] | None = None,
    ):
        ensure_writable(out_dir, overwrite)
        self.out_dir = Path(out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
        self.tmp_dir.mkdir()
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self._tensor_bytes = 0
        self._weights: dict[str, FileInfo] | None = None
        self.headers: dict[str, str] = {}  # weight file -> header_sha256, once the weights are closed
        self._files: dict[str, FileInfo] = {}

    # -- tensors ---------------------------------------------------------------------------
    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self._weights is not None:
            raise RuntimeError("weights already closed")
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.detach().contiguous()
        self._pending_bytes += size
        self._tensor_bytes += size

    def _shard_tmp_name(self, i: int) -> str:
        return f"shard-{i:05d}.safetensors"

    def _flush(self) -> None:
        if not self._pending:
            return
        path = self.tmp_dir / self._shard_tmp_name(len(self._shards))
        save_file(self._pending, str(path), metadata=self.metadata)
        canonicalize_header(path)
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0
        release_freed_memory()

    def close_weights(self) -> dict[str, FileInfo]:
        """Write the last shard, give shards their final names; returns their sizes and hashes."""
        if self._weights is not None:
            return self._weights
        self._flush()
        n = len(self._shards)
        if n == 0:
            save_file({}, str(self.tmp_dir / SINGLE_FILE), metadata=self.metadata)
            canonicalize_header(self.tmp_dir / SINGLE_FILE)
            names = [SINGLE_FILE]
        elif n == 1:
            os.replace(self.tmp_dir / self._shard_tmp_name(0), self.tmp_dir / SINGLE_FILE)
            names = [SINGLE_FILE]
        else:
            names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
            for i, name in enumerate(names):
                os.replace(self.tmp_dir / self._shard_tmp_name(i), self.tmp_dir / name)
            weight_map = {t: names[i] for i, shard in enumerate(self._shards) for t in shard}
            index = {"metadata": {"total_size": self._tensor_bytes, **self.metadata}, "weight_map": weight_map}
            self.write_json(INDEX_FILE, index, record=False)
            names.append(INDEX_FILE)
        mode = default_file_mode()  # safetensors creates files 0600; give them the umask's mode like the rest
        for name in names:
            os.chmod(self.tmp_dir / name, mode)
        self._weights = {name: file_info(self.tmp_dir / name) for name in names}
        self.headers = {name: header_sha256(self.tmp_dir / name) for name in names if name.endswith(".safetensors")}
        self._files.update(self._weights)
        return self._weights

    # -- other files ------------------------------------------------------------------------
    def write_json(self, name: str, data: Any, *, record: bool = True) -> None:
        path = self.tmp_dir / name
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        if record:
            self._files[name] = file_info(path)

    def copy_file(self, src: Path, name: str | None = None) -> None:
        """Copy `src` into the output as `name` (a relative POSIX path; default: its file name)."""
        name = name or src.name
        (self.tmp_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, self.tmp_dir / name)
        self._files[name] = file_info(self.tmp_dir / name)

    @property
    def files(self) -> dict[str, FileInfo]:
        """Every file written so far with its hash."""
        return dict(sorted(self._files.items()))

    # -- commit / abort -------------------------------------------------------------------
    def commit(self, *, mark: str | None = None) -> Path:
        """Move the output into place; `mark` (who wrote it) marks a dense output as zoo's (write_output_mark)."""
        self.close_weights()
        if mark is not None:
            write_output_mark(self.tmp_dir, mark)
        return replace_dir(self.tmp_dir, self.out_dir)

    def abort(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> CheckpointWriter:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
