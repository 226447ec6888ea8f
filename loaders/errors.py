"""The errors of the loaders layer (each under `ZooError`, re-exported by the modules that raise them)."""

from __future__ import annotations

from zoo.formats.errors import ZooError


class ModeError(ZooError, ValueError):
    """An execution mode that a module's codec (or the device) cannot serve."""


class StructureError(ZooError, ValueError):
    """A model whose layers zoo cannot prune or rebuild (unknown layout, a shape that does not fit)."""


__all__ = ["ModeError", "StructureError"]
