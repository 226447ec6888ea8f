"""What registries return."""

from __future__ import annotations

from dataclasses import dataclass, field

from zoo.formats.manifest import FileInfo

from .index import RevisionRecord


@dataclass(frozen=True)
class Resolved:
    """A model name resolved to one revision and the files it must have."""

    name: str
    revision: str
    files: dict[str, FileInfo] | list[str]  # recorded hashes, or (a hub repo not in the index) names only
    record: RevisionRecord | None = None
    repo: str | None = None


@dataclass(frozen=True)
class Published:
    name: str
    revision: str
    location: str
    nfiles: int
    nbytes: int
    skipped: list[str] = field(default_factory=list)  # hidden files left out
