"""The files of a checkpoint on disk: listing them, hashing them, checking a copy against the index,
and moving a verified copy into place.

A pull never exposes a half-checked model: files land in a hidden sibling (`.REV.partial-XXXX`) of
the target, every file's size and sha256 is checked, the checkpoint is opened (manifest, tensors and
the manifest's own sha256 list), and only then is the directory renamed into place. Any failure
removes the partial copy. A per-target file lock makes concurrent pulls of one model wait for each
other instead of racing; the loser finds the winner's verified copy and checks it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from zoo.formats.records import FileInfo

from ..errors import ChecksumError, FormatError, RegistryError
from .names import RESERVED_TOP, check_file_name

if TYPE_CHECKING:
    from zoo.formats import Checkpoint

# The format's reader and writer (and torch with them) are imported where a checkpoint's files are read or
# hashed, not here: `zoo list` reads the index alone.

LOCK_TIMEOUT_S = 30 * 60  # a concurrent pull of a large model may take a while


def open_source(src: Path) -> Checkpoint:
    """The checkpoint to upload, checked for structure (manifest, tensors) before anything is copied."""
    if not src.is_dir():
        raise RegistryError(
            f"{src} is not a directory", hint="upload a zoo checkpoint directory (zoo compress writes one)"
        )
    from zoo.formats import Checkpoint

    return Checkpoint.open(src, verify=False)


ZOO_HIDDEN = {".eval_results"}  # hidden, but zoo's own: the card's evaluation results, uploaded with it


def hidden_files(directory: Path) -> list[str]:
    """Dot-files and dot-folders an upload leaves out unless asked (.env, .DS_Store, editor state...), except
    those zoo writes for the Hub; `.git/` and `.cache/` are never uploaded."""
    return sorted(
        p.name for p in Path(directory).iterdir() if p.name.startswith(".") and p.name not in ZOO_HIDDEN | RESERVED_TOP
    )


def checkpoint_files(
    directory: Path, where: str | None = None, *, skip: set[str] | frozenset = frozenset()
) -> list[str]:
    """Every regular file under `directory` as a relative POSIX path (sorted), skipping `.git/` and
    `.cache/` at the top, and the top-level entries in `skip`. A symbolic link or any other special file is
    refused."""
    where = where or str(directory)
    names = []
    for root, dirs, files in os.walk(directory):
        rel_root = Path(root).relative_to(directory)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in RESERVED_TOP and d not in skip]
            files = [f for f in files if f not in skip]
        for entry in sorted(dirs) + sorted(files):
            path = Path(root) / entry
            mode = path.lstat().st_mode
            rel = (rel_root / entry).as_posix()
            if stat.S_ISLNK(mode):
                raise RegistryError(
                    f"{where}: {rel} is a symbolic link; a registry holds plain files only",
                    hint="replace the link with a copy of the file",
                )
            if entry in files:
                if not stat.S_ISREG(mode):
                    raise RegistryError(f"{where}: {rel} is not a regular file")
                names.append(check_file_name(rel, where))
    return sorted(names)


def file_records(directory: Path, names: list[str]) -> dict[str, FileInfo]:
    from zoo.formats.writer import file_info

    return {name: file_info(directory / name) for name in names}


def content_revision(files: dict[str, FileInfo]) -> str:
    """A local revision id: the sha256 of every file's name and sha256 (12 hex digits)."""
    canonical = json.dumps({name: f.sha256 for name, f in sorted(files.items())}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def verify_files(directory: Path, expected: dict[str, FileInfo], where: str) -> None:
    """`directory` holds exactly the expected files (no links), each with its recorded size and sha256."""
    from zoo.formats.writer import file_info

    found = set(checkpoint_files(directory, where))
    missing = sorted(set(expected) - found)
    if missing:
        raise ChecksumError(
            f"{where}: {missing[0]} is missing ({len(missing)} of {len(expected)} files)",
            hint="the registry copy is incomplete; upload the model again",
        )
    extra = sorted(found - set(expected))
    if extra:
        raise ChecksumError(f"{where}: {extra[0]} is not listed in the registry's index")
    for name, want in sorted(expected.items()):
        got = file_info(directory / name)
        if got != want:
            raise ChecksumError(
                f"{where}: {name} does not match the sha256 the registry recorded "
                f"({got.nbytes} bytes, sha256 {got.sha256[:12]}... vs {want.nbytes} bytes, {want.sha256[:12]}...)",
                hint="the registry copy was damaged or tampered with; nothing was kept. Upload the model again",
            )


def copy_files(src: Path, dest: Path, names: list[str], where: str, *, link: bool = False) -> None:
    """Copy `names` from `src` to `dest`, refusing any path through a symbolic link in `src`. With `link`
    (files zoo keeps read-only: a local registry's), hard-link instead where both sit on one file system,
    so a pull takes no second copy of the bytes; copy otherwise."""
    for name in names:
        check_file_name(name, where)
        path = src
        for part in name.split("/"):
            path = path / part
            if path.is_symlink():
                raise RegistryError(
                    f"{where}: {name} passes through a symbolic link; refusing to copy it",
                    hint="a registry holds plain files only",
                )
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            try:
                os.link(path, target)
                continue
            except OSError:  # another file system (EXDEV), or one without hard links: copy
                pass
        shutil.copyfile(path, target)


def make_read_only(directory: Path, names: list[str]) -> None:
    """Files a registry stores are never edited in place (pulls hard-link them): r--r--r--."""
    for name in names:
        os.chmod(directory / name, 0o444)


def lock_for(locks: Path, target: Path) -> FileLock:
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:24]
    return FileLock(locks / f"{key}.lock", timeout=LOCK_TIMEOUT_S)


_PARTIAL = re.compile(r"\.partial-(\d+)-[0-9a-f]{8}\Z")


def partial_dir(parent: Path, stem: str) -> Path:
    """A hidden work directory that names its owner's process, so a later run can tell a crashed one's."""
    return parent / f".{stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_partials(parent: Path) -> list[str]:
    """Remove the partial directories that killed processes (SIGKILL, power loss) left in `parent`: only those
    whose owner is gone. Returns their names."""
    removed = []
    if parent.is_dir():
        for path in parent.iterdir():
            match = _PARTIAL.search(path.name)
            if path.name.startswith(".") and match and not _alive(int(match.group(1))):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
    return removed


def install(target: Path, locks: Path, fill: Callable[[Path], None], verify: Callable[[Path], None]) -> Path:
    """Make `target` a verified copy: reuse it if it verifies, else `fill` a partial sibling, `verify`
    it and rename it into place. A failure leaves no partial copy."""
    lock = lock_for(locks, target)
    try:
        with lock:
            if target.is_dir():
                try:
                    verify(target)
                    return target
                except (FormatError, RegistryError):  # a damaged cached copy: fetch it again
                    shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(target.parent)
            partial = partial_dir(target.parent, target.name)
            partial.mkdir()
            try:
                fill(partial)
                verify(partial)
                os.replace(partial, target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            return target
    except Timeout:
        raise RegistryError(
            f"another process has held the lock on {target} for {LOCK_TIMEOUT_S // 60} minutes",
            hint=f"if no zoo process is running, delete {lock.lock_file}",
        ) from None
