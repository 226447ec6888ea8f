"""Model names, revisions, and the file names a registry may hand us.

A model name is one or more `/`-separated parts: `minilm-l6/rotten-tomatoes/4bit-2of4`, `my-org/my-model`.
Written with the `zoo:` prefix (a *stub*) it always resolves through the registry's index; without the
prefix a hub registry also accepts a Hugging Face repo id that its index does not list. `@REV` pins a
revision: `zoo:minilm-l6/rotten-tomatoes/4bit-2of4@3f9c2a1b7d0e` (a unique prefix of 6+ characters will do).

File names come from the registry (its index, or a hub repo's listing), so they are untrusted: a name
must be a relative POSIX path of plain parts, or the pull is refused before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RegistryError

STUB_PREFIX = "zoo:"
# \Z, not $: `$` also matches before a trailing newline, which would let "model\n" through
_PART = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*\Z")
_REVISION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_FILE_PART = re.compile(r"\A[A-Za-z0-9._+-]+\Z")  # no glob characters: names double as allow_patterns
MAX_PART = 96
MAX_PARTS = 8
MAX_NAME = 200
RESERVED_TOP = {".git", ".cache"}  # version control, and huggingface_hub's local_dir metadata


@dataclass(frozen=True)
class ModelRef:
    name: str  # without the zoo: prefix
    revision: str | None
    stub: bool  # written as zoo:NAME

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{STUB_PREFIX if self.stub else ''}{self.name}{rev}"


def parse_name(text: str, revision: str | None = None) -> ModelRef:
    """`zoo:a/b/c@rev`, `a/b/c`, `org/repo@main` -> ModelRef. `revision` (e.g. --revision) must not
    contradict an `@rev` in the text."""
    raw = text.strip(" ")  # a newline or tab in a name is refused below, not trimmed away
    stub = raw.startswith(STUB_PREFIX)
    body = raw[len(STUB_PREFIX) :] if stub else raw
    name, at, rev = body.partition("@")
    if at:
        if revision is not None and revision != rev:
            raise RegistryError(f"{text!r} pins revision {rev!r} but --revision says {revision!r}")
        revision = rev
    parts = name.split("/")
    if len(name) > MAX_NAME or len(parts) > MAX_PARTS:
        raise RegistryError(
            f"model name of {len(name)} characters in {len(parts)} parts is too long",
            hint=f"at most {MAX_NAME} characters in {MAX_PARTS} parts of {MAX_PART}",
        )
    if not name or not all(_PART.match(p) and len(p) <= MAX_PART for p in parts):
        raise RegistryError(
            f"{text!r} is not a model name",
            hint="use parts of letters, digits, '-', '_' and '.', separated by '/': "
            "zoo:minilm-l6/rotten-tomatoes/4bit-2of4",
        )
    if revision is not None:
        check_revision(revision)
    return ModelRef(name=name, revision=revision, stub=stub)


def check_revision(revision: str) -> str:
    if not _REVISION.match(revision) or ".." in revision:
        raise RegistryError(
            f"{revision!r} is not a revision", hint="a revision is a commit id, content hash, tag or branch"
        )
    return revision


def is_repo_id(name: str) -> bool:
    """A Hugging Face repo id has exactly two parts: owner/name."""
    return name.count("/") == 1


def hub_repo_for(name: str, namespace: str, *, stub: bool) -> str:
    """The hub repo a model name is stored in: a plain `owner/name` as itself; any other name (or one
    written as a stub) in the registry's namespace, its parts joined by '.' (the Hub forbids '--')."""
    if is_repo_id(name) and not stub:
        return name
    flat = name.replace("/", ".")
    if len(flat) > MAX_PART:
        raise RegistryError(f"model name {name!r} is too long for a hub repo ({len(flat)} > {MAX_PART} characters)")
    return f"{namespace}/{flat}"


def check_file_name(name: str, where: str) -> str:
    """Refuse a file name from a registry that could write outside the target directory."""
    parts = name.split("/") if isinstance(name, str) else []
    safe = (
        bool(parts)
        and "\\" not in name
        and all(p not in ("", ".", "..") and _FILE_PART.match(p) for p in parts)
        and parts[0] not in RESERVED_TOP
    )
    if not safe:
        raise RegistryError(
            f"{where} lists a file named {name!r}, which is not a plain relative path: refusing to write it",
            hint="the registry's index or repository is damaged or hostile; do not use it",
        )
    return name
