"""What `zoo info` shows of a checkpoint: its manifest and the facts derived from it, read from the checkpoint alone
(after verifying it). `zoo info` prints them; `zoo info --json` prints `CheckpointFacts.to_json()`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zoo.formats.manifest import Manifest
from zoo.formats.reader import Checkpoint

from .facts import LayerRow, Results, layer_rows, other_tensors_nbytes, results


@dataclass(frozen=True)
class LoadsAs:
    """A checkpoint whose weights load as another class than the one config.json names."""

    architecture: str  # the class the weights load as
    named: str  # the class config.json names, whose head the weights lack


def loads_as(manifest: Manifest, config: dict[str, Any]) -> LoadsAs | None:
    named = (config.get("architectures") or [None])[0]
    architecture = manifest.base_model.architecture
    return LoadsAs(architecture, named) if architecture and named and architecture != named else None


@dataclass(frozen=True)
class Rounding:
    """How a post-training checkpoint's weights were rounded, when its recipe rounds with GPTQ."""

    gptq: bool  # False: rounded to nearest, because GPTQ could not be used
    on: str  # what GPTQ measured on, or why it was not used ("not used: ...")


def rounding(manifest: Manifest) -> Rounding | None:
    """None for a trained checkpoint, or a recipe that does not round with GPTQ."""
    gptq = manifest.recipe.spec.get("gptq")
    gptq = gptq if isinstance(gptq, dict) else {}  # the spec is free-form data a checkpoint brings
    on = str(gptq.get("calibrated_on") or "")
    if manifest.training is not None or not on:
        return None
    return Rounding(gptq=not on.startswith("not used: "), on=on)


@dataclass(frozen=True)
class CheckpointFacts:
    """A checkpoint's manifest and the facts `zoo info` derives from it."""

    path: Path
    manifest: Manifest
    description: str  # the recipe's
    results: Results
    layers: list[LayerRow]
    other_tensors_nbytes: int
    loads_as: LoadsAs | None
    rounding: Rounding | None

    def to_json(self) -> dict[str, Any]:
        """The facts as `zoo info --json` prints them (results, layers, manifest)."""
        res = {k: v for k, v in asdict(self.results).items() if k != "extra"}
        return {
            "path": str(self.path),
            "results": {**res, "measured": self.results.measured},
            "layers": [asdict(r) for r in self.layers],
            "manifest": self.manifest.model_dump(mode="json"),
        }


def checkpoint_facts(path: str | Path) -> CheckpointFacts:
    """The facts of the checkpoint in `path`, which is fully verified (manifest, tensors, sha256) first."""
    ckpt = Checkpoint.open(path)
    m = ckpt.manifest
    return CheckpointFacts(
        path=Path(path),
        manifest=m,
        description=str(m.recipe.spec.get("description", "")),
        results=results(m),
        layers=layer_rows(m),
        other_tensors_nbytes=other_tensors_nbytes(m),
        loads_as=loads_as(m, ckpt.config),
        rounding=rounding(m),
    )
