"""Model cards: README.md with metadata, results, per-layer table and an accuracy-vs-size plot, and the
facts `zoo info` prints. Everything is read from a checkpoint's manifest (`formats`)."""

if __name__ != "zoo.cards":  # the folder is on sys.path (a source tree's root): one name only, or classes exist twice
    raise ImportError(f"import zoo.cards, not {__name__}: this folder installs as zoo.cards (pip install -e .)")


from .card import (
    EVAL_RESULTS_DIR,
    PLOT,
    README,
    CardFiles,
    base_card_data,
    build_card,
    manifest_of,
    point_of,
    write_card,
)
from .facts import LayerRow, ResultRow, Results, layer_rows, methods, other_tensors_nbytes, results
from .plot import PlotUnavailable, Point, have_matplotlib

__all__ = [
    "EVAL_RESULTS_DIR",
    "PLOT",
    "README",
    "CardFiles",
    "LayerRow",
    "PlotUnavailable",
    "Point",
    "ResultRow",
    "Results",
    "base_card_data",
    "build_card",
    "have_matplotlib",
    "layer_rows",
    "manifest_of",
    "methods",
    "other_tensors_nbytes",
    "point_of",
    "results",
    "write_card",
]
