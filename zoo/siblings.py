"""Which other models a model card plots beside its own: checkpoints named by the user (`zoo card --sibling`) and
the models a registry lists (`--registry`, `zoo upload --card`), each only when it was measured like this one.

The card itself (zoo.cards) draws whatever points it is given; choosing them reads registries, which live above it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cards import Point, Results, manifest_of, point_of, results

if TYPE_CHECKING:
    from .registry import ListedModel


@dataclass(frozen=True)
class NotPlotted:
    """A checkpoint left out of the plot, and why."""

    path: Path
    measured_on: tuple[str | None, str | None] | None  # its (dataset, split), not this model's; None: no accuracy


@dataclass(frozen=True)
class Siblings:
    points: list[Point]
    not_plotted: list[NotPlotted]


def sibling_points(own: Results, directories: Iterable[Path]) -> Siblings:
    """Plot points for zoo checkpoints in `directories`, labelled by folder name: those measured on the dataset and
    split `own` was (the others are returned as not plotted)."""
    points, not_plotted = [], []
    for directory in directories:
        manifest, _ = manifest_of(directory)
        theirs = results(manifest)
        point = point_of(Path(directory).resolve().name, manifest)
        if point is None:
            not_plotted.append(NotPlotted(directory, None))
        elif (theirs.dataset, theirs.split) != (own.dataset, own.split):
            not_plotted.append(NotPlotted(directory, (theirs.dataset, theirs.split)))
        else:
            points.append(point)
    return Siblings(points, not_plotted)


def listed_points(own: Results, models: Iterable[ListedModel], *, exclude: str | None = None) -> list[Point]:
    """Plot points for the listed models whose headline result has `own`'s metric, dataset and split, labelled by
    name (without zoo:), except the one named `exclude` (with or without zoo:): the model itself."""
    skip = {exclude, f"zoo:{exclude}"} if exclude else set()
    return [
        Point(m.name.removeprefix("zoo:"), m.checkpoint_nbytes, m.result.value, "sibling")
        for m in models
        if m.name not in skip
        and m.result is not None
        and (m.result.metric, m.result.dataset, m.result.split) == (own.metric, own.dataset, own.split)
    ]


def registry_points(
    own: Results, *, registry: str | None = None, token: str | None = None, exclude: str | None = None
) -> list[Point]:
    """`listed_points` of the models `registry` lists (read from its index)."""
    from .registry import list_models

    return listed_points(own, list_models(registry=registry, token=token).models, exclude=exclude)
