"""The errors of the cards layer (each under `ZooError`, re-exported by the modules that raise them)."""

from __future__ import annotations

from zoo.formats.errors import ZooError


class PlotUnavailable(ZooError):
    """matplotlib is not installed: the card is written without its plot."""


__all__ = ["PlotUnavailable"]
