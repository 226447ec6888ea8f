"""What registries return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from zoo.formats.records import FileInfo

from .index import ListedModel, RevisionRecord


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


class Listing(NamedTuple):
    """What a registry holds, read from its index: `zoo list`."""

    where: str  # the registry, in words
    models: list[ListedModel]

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.where, "models": [m.model_dump(mode="json") for m in self.models]}
