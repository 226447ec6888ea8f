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
from .info import CheckpointFacts, LoadsAs, Rounding, checkpoint_facts, loads_as, rounding
from .plot import PlotUnavailable, Point, have_matplotlib

__all__ = [
    "EVAL_RESULTS_DIR",
    "PLOT",
    "README",
    "CardFiles",
    "CheckpointFacts",
    "LayerRow",
    "LoadsAs",
    "PlotUnavailable",
    "Point",
    "ResultRow",
    "Results",
    "Rounding",
    "base_card_data",
    "build_card",
    "checkpoint_facts",
    "have_matplotlib",
    "layer_rows",
    "loads_as",
    "manifest_of",
    "methods",
    "other_tensors_nbytes",
    "point_of",
    "results",
    "rounding",
    "write_card",
]
