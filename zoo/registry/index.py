"""The registry index: one versioned JSON document that names every model a registry holds.

    {"version": 1,
     "models": {"minilm-l6/rotten-tomatoes/4bit-2of4": {
         "main": "<revision>",
         "revisions": {"<revision>": {
             "created": "2026-11-21T21:46:43Z",
             "repo": "zoo-registry/minilm-l6.rotten-tomatoes.4bit-2of4",   # hub registries only
             "files": {"config.json": {"sha256": "...", "nbytes": 1234}, ...},  # every file
             "summary": {"recipe": "4bit-2of4", "checkpoint_ratio": 1.74, ...}}}}}}

`files` covers every file of the checkpoint, config.json and README.md included (the manifest in
config.json cannot record its own hash, and the model card is not in the manifest), so a pull checks
each file against the index first and then against the manifest (`Checkpoint.open`). `summary` is
copied from the manifest when the model is uploaded, so `zoo list` reads this one file and nothing else.
"""

from __future__ import annotations

import difflib
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError

from zoo.formats.records import EvalResult, FileInfo  # codec-free: reading the index (`zoo list`) loads no torch

from ..errors import ModelNotFoundError, RegistryError
from .names import ModelRef, check_revision, parse_name

if TYPE_CHECKING:
    from zoo.formats.manifest import Manifest

INDEX_FILE = "index.json"  # the index's file: in a local registry's root, in a hub registry's index repo
INDEX_VERSION = 1
MIN_PREFIX = 6  # shortest revision prefix accepted for @REV


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Summary(_Model):
    recipe: str
    base_model: str
    checkpoint_nbytes: int
    total_nbytes: int
    checkpoint_ratio: float
    encoder_linear_ratio: float
    result: EvalResult | None = None


class RevisionRecord(_Model):
    created: str
    files: dict[str, FileInfo]
    summary: Summary
    repo: str | None = None
    private: bool = False


class ModelRecord(_Model):
    main: str
    revisions: dict[str, RevisionRecord]


class Index(_Model):
    version: int = INDEX_VERSION
    models: dict[str, ModelRecord] = {}

    @classmethod
    def parse(cls, text: str | bytes, where: str) -> Index:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(f"the index of {where} is not valid JSON: {exc}") from None
        version = data.get("version") if isinstance(data, dict) else None
        if version != INDEX_VERSION:
            raise RegistryError(
                f"the index of {where} has version {version!r}; this zoo reads version {INDEX_VERSION}",
                hint="upgrade zoo-compress: pip install -U zoo-compress",
            )
        try:
            index = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise RegistryError(
                f"the index of {where} is invalid: {'.'.join(map(str, err['loc']))}: {err['msg']}"
            ) from None
        for name, record in index.models.items():  # names and revisions become paths: check them
            parse_name(name)
            for rev in (record.main, *record.revisions):
                check_revision(rev)
            if record.main not in record.revisions:
                raise RegistryError(f"the index of {where}: {name} points at a revision it does not list")
        return index

    def dump(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True) + "\n"

    def add(self, name: str, revision: str, record: RevisionRecord) -> None:
        """Record a revision of `name` and make it the one `main` points at."""
        entry = self.models.get(name)
        if entry is None:
            self.models[name] = ModelRecord(main=revision, revisions={revision: record})
        else:
            entry.revisions[revision] = record
            entry.main = revision

    def lookup(self, ref: ModelRef, where: str) -> tuple[str, RevisionRecord]:
        """(revision, record) of `ref`; an unknown name or revision fails in one line with close matches."""
        entry = self.models.get(ref.name)
        if entry is None:
            raise self.not_found(ref, where)
        if ref.revision is None or ref.revision == "main":
            return entry.main, entry.revisions[entry.main]
        if ref.revision in entry.revisions:
            return ref.revision, entry.revisions[ref.revision]
        prefixed = [r for r in entry.revisions if len(ref.revision) >= MIN_PREFIX and r.startswith(ref.revision)]
        if len(prefixed) == 1:
            return prefixed[0], entry.revisions[prefixed[0]]
        known = ", ".join(sorted(entry.revisions, key=lambda r: entry.revisions[r].created, reverse=True)[:5])
        raise ModelNotFoundError(
            f"{ref.name} has no revision {ref.revision!r} in {where} (it has: {known})",
            hint=f"zoo list shows each model's current revision; pin one with {ref.name}@REVISION",
        )

    def not_found(self, ref: ModelRef, where: str) -> ModelNotFoundError:
        close = difflib.get_close_matches(ref.name, list(self.models), n=3, cutoff=0.5)
        near = f"; close matches: {', '.join('zoo:' + c for c in close)}" if close else ""
        return ModelNotFoundError(
            f"no model {ref.name!r} in {where} ({len(self.models)} model{'' if len(self.models) == 1 else 's'}){near}",
            hint="`zoo list` shows what the registry holds; --registry picks another one",
        )


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def headline_result(manifest: Manifest) -> EvalResult | None:
    """The compressed model's measured result to show in a listing: the one its model card leads with."""
    from zoo.cards.facts import headline  # at upload only: reading the index (`zoo list`) needs no card facts

    return headline(manifest.evaluation)[0]


def summary_of(manifest: Manifest, files: dict[str, FileInfo]) -> Summary:
    s = manifest.sizes
    return Summary(
        recipe=manifest.recipe.name,
        base_model=manifest.base_model.id,
        checkpoint_nbytes=s.checkpoint_nbytes,
        total_nbytes=sum(f.nbytes for f in files.values()),
        checkpoint_ratio=s.checkpoint_ratio,
        encoder_linear_ratio=s.encoder_linear_ratio,
        result=headline_result(manifest),
    )


class ListedModel(_Model):
    """One model of a registry's listing (its main revision), read from the index alone: a row of `zoo list`."""

    name: str  # zoo:NAME
    revision: str
    revisions: int  # how many the index records
    recipe: str
    base_model: str
    size_nbytes: int  # every file, the model card included
    checkpoint_nbytes: int
    checkpoint_ratio: float
    encoder_linear_ratio: float
    result: EvalResult | None  # the headline result its model card leads with
    created: str
    repo: str | None


def listing(index: Index) -> list[ListedModel]:
    """One row per model (its main revision), for `zoo list`."""
    rows = []
    for name in sorted(index.models):
        entry = index.models[name]
        rec = entry.revisions[entry.main]
        s = rec.summary
        rows.append(
            ListedModel(
                name=f"zoo:{name}",
                revision=entry.main,
                revisions=len(entry.revisions),
                recipe=s.recipe,
                base_model=s.base_model,
                size_nbytes=s.total_nbytes,
                checkpoint_nbytes=s.checkpoint_nbytes,
                checkpoint_ratio=s.checkpoint_ratio,
                encoder_linear_ratio=s.encoder_linear_ratio,
                result=s.result,
                created=rec.created,
                repo=rec.repo,
            )
        )
    return rows
