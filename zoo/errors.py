"""zoo's errors: those that belong to the zoo layer, and every layer's errors re-exported, so that any zoo
error can be imported from here. Each layer keeps its own in one module: formats.errors (ZooError, the base,
and the checkpoint and codec errors), loaders.errors (ModeError, StructureError), cards.errors
(PlotUnavailable) and this one.

The loaders' and cards' errors are re-exported lazily: importing them loads transformers (importing any part
of zoo.loaders registers the quantization method), which the CLI imports only for commands that need it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from zoo.formats.errors import (  # re-exported: one place to import every error from
    ChecksumError,
    CodecError,
    FormatError,
    ManifestError,
    OutputExistsError,
    PatternError,
    ZooError,
)


class RecipeError(ZooError, ValueError):
    """A recipe is unknown, invalid, or does not fit the model."""


class ModelNotFoundError(ZooError, FileNotFoundError):
    """A model name resolved to nothing: not a directory, not on the hub, not packaged."""


class UnsupportedModelError(ZooError):
    """transformers cannot build the model's architecture, so zoo cannot tell its layers apart."""


class RegistryError(ZooError):
    """A registry cannot be used as asked: bad name, unsafe file name, refused credentials, bad index."""


class RegistryUnreachableError(RegistryError, ConnectionError):
    """A remote registry did not answer after a bounded number of attempts."""


class TaskError(ZooError):
    """A task or its data cannot be loaded, or does not fit the model."""


class ExportError(ZooError, ValueError):
    """A model, module or codec the ONNX export cannot write as stored; nothing is written."""


class ExportUnavailable(ZooError, ImportError):
    """The ONNX export's packages (onnx, onnxscript, onnxruntime) are not installed."""


class RankFailed(ZooError):
    """In a data-parallel job, rank 0 failed in a step only it runs (writing, evaluating); the other ranks stop
    with this instead of waiting at the next barrier."""


if TYPE_CHECKING:
    from zoo.cards.errors import PlotUnavailable
    from zoo.loaders.errors import ModeError, StructureError

_LAZY = {
    "ModeError": "zoo.loaders.errors",
    "StructureError": "zoo.loaders.errors",
    "PlotUnavailable": "zoo.cards.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChecksumError",
    "CodecError",
    "ExportError",
    "ExportUnavailable",
    "FormatError",
    "ManifestError",
    "ModeError",
    "ModelNotFoundError",
    "OutputExistsError",
    "PatternError",
    "PlotUnavailable",
    "RankFailed",
    "RecipeError",
    "RegistryError",
    "RegistryUnreachableError",
    "StructureError",
    "TaskError",
    "UnsupportedModelError",
    "ZooError",
]
