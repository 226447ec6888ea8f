"""The local registry: a folder, no server. The default one is `$ZOO_HOME` (`~/.cache/zoo`).

    ROOT/index.json                      the index (see index.py), replaced atomically
    ROOT/models/NAME/REVISION/...        each model's files, NAME being its /-separated parts
    ROOT/.locks/                         file locks

A revision is a content hash (12 hex digits of the sha256 over every file's name and sha256), so an
identical upload lands on the same revision. An upload is copied into a hidden staging folder beside
`models/`, verified there (`Checkpoint.open`: manifest, tensors, sha256 of every listed file), hashed,
and then, under the index lock, renamed into place and recorded in the index (written to a temporary
file and renamed). Readers never lock: they see the old index or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import ChecksumError, RegistryError
from .files import (
    LOCK_TIMEOUT_S,
    checkpoint_files,
    content_revision,
    copy_files,
    file_records,
    hidden_files,
    make_read_only,
    open_source,
    partial_dir,
    remove_stale_partials,
    verify_files,
)
from .index import INDEX_FILE, Index, RevisionRecord, now, summary_of
from .names import ModelRef, parse_name
from .types import Published, Resolved

# The format's reader and writer (and torch with them) are imported where used: `zoo list` opens a registry only
# to read its index.


def _store(staged: Path, target: Path, files) -> None:
    """Move a verified upload into place. The same content has the same revision, so an intact copy
    already there stays (pulls may be reading it); a damaged one is replaced."""
    from zoo.formats.writer import replace_dir

    if target.is_dir():
        try:
            verify_files(target, files, str(target))
            return
        except (ChecksumError, RegistryError):
            pass
    make_read_only(staged, sorted(files))
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(staged, target)


class LocalRegistry:
    kind = "local"

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.where = f"local registry {self.root}"
        self.cache_key = "local-" + hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def models(self) -> Path:
        return self.root / "models"

    def read_index(self) -> Index:
        if not self.index_path.is_file():
            return Index()
        return Index.parse(self.index_path.read_bytes(), self.where)

    def _write_index(self, index: Index) -> None:
        from zoo.formats.writer import write_file_atomic

        write_file_atomic(self.index_path, index.dump())

    def _index_lock(self) -> FileLock:
        (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / ".locks" / "index.lock", timeout=LOCK_TIMEOUT_S)

    def upload(self, src: Path, name: str, *, private: bool = False, include_hidden: bool = False) -> Published:
        from zoo.formats import Checkpoint

        ref = parse_name(name)
        if ref.revision is not None:
            raise RegistryError(f"{name!r}: the registry assigns revisions", hint="upload without @REVISION")
        open_source(src)
        skipped = [] if include_hidden else hidden_files(src)
        names = checkpoint_files(src, skip=set(skipped))
        self.models.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.models)
        staged = partial_dir(self.models, "upload")
        try:
            staged.mkdir()
            copy_files(src, staged, names, str(src))
            manifest = Checkpoint.open(staged).manifest  # what is stored is what was verified
            files = file_records(staged, names)
            revision = content_revision(files)
            record = RevisionRecord(created=now(), files=files, summary=summary_of(manifest, files))
            target = self.models.joinpath(*ref.name.split("/"), revision)
            try:
                with self._index_lock():
                    index = self.read_index()
                    _store(staged, target, files)
                    index.add(ref.name, revision, record)
                    self._write_index(index)
            except Timeout:
                raise RegistryError(
                    f"{self.where}: the index lock was held for {LOCK_TIMEOUT_S // 60} minutes",
                    hint=f"if no zoo process is running, delete {self.root / '.locks'}",
                ) from None
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return Published(
            name=ref.name,
            revision=revision,
            location=str(target),
            nfiles=len(files),
            nbytes=record.summary.total_nbytes,
            skipped=skipped,
        )

    def resolve(self, ref: ModelRef) -> Resolved:
        revision, record = self.read_index().lookup(ref, self.where)
        return Resolved(name=ref.name, revision=revision, files=record.files, record=record)

    def fetch(self, resolved: Resolved, dest: Path) -> None:
        stored = self.models.joinpath(*resolved.name.split("/"), resolved.revision)
        if not stored.is_dir() or stored.is_symlink():
            raise RegistryError(
                f"{self.where}: the index lists {resolved.name}@{resolved.revision} but its folder {stored} is missing",
                hint="upload the model again",
            )
        copy_files(
            stored, dest, sorted(resolved.files), f"{self.where} ({resolved.name}@{resolved.revision})", link=True
        )
