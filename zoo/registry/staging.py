"""Upload staging (`zoo upload --card`): a copy of a checkpoint whose model card is written anew, to name the model
as it is published and plot the registry's measured models beside it.

The checkpoint's own directory is never modified: its files are hard-linked where the filesystem allows (copied
elsewhere), and the card's files are replaced in the copy (written to a new file, then renamed), never written
through a link."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zoo.cards import CardFiles, Point, results, write_card
from zoo.formats import Checkpoint

from ..siblings import registry_points
from .names import parse_name


@dataclass(frozen=True)
class StagedUpload:
    path: Path  # the copy to upload
    card: CardFiles  # its model card, written anew
    siblings: list[Point]  # the other models its plot shows
    linked: int  # files hard-linked to the checkpoint's
    copied: int  # files copied (another filesystem, or one that refuses hard links)


def stage_upload(
    model_dir: str | Path, into: str | Path, *, card_name: str, siblings: Sequence[Point] = ()
) -> StagedUpload:
    """Copy the checkpoint in `model_dir` to `into`/its folder name and write the copy's model card, naming it
    `card_name` and plotting `siblings`. Symbolic links are copied as links (the registry then refuses them)."""
    model_dir = Path(model_dir)
    staged = Path(into) / model_dir.name
    linked: list[str] = []
    copied: list[str] = []

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
            linked.append(dst)
        except OSError:
            shutil.copy2(src, dst)
            copied.append(dst)

    shutil.copytree(model_dir, staged, symlinks=True, copy_function=link_or_copy)
    card = write_card(staged, name=card_name, siblings=siblings)
    return StagedUpload(staged, card, list(siblings), len(linked), len(copied))


@contextmanager
def staged_upload(
    model_dir: str | Path, name: str, *, registry: str | None = None, token: str | None = None
) -> Iterator[StagedUpload]:
    """`stage_upload` into a temporary directory, removed afterwards, for publishing `model_dir` as `name` in
    `registry`: the card names `name` and, when the checkpoint has measured results, plots the models the
    registry lists that were measured like it (the registry is not read for an unmeasured one)."""
    ref = parse_name(name)
    own = results(Checkpoint.open(model_dir, verify=False).manifest)
    siblings = registry_points(own, registry=registry, token=token, exclude=ref.name) if own.measured else []
    with tempfile.TemporaryDirectory(prefix="zoo-upload-") as tmp:
        yield stage_upload(model_dir, tmp, card_name=f"{'zoo:' if ref.stub else ''}{ref.name}", siblings=siblings)
