"""Accuracy against size: this model beside its dense teacher and sibling models (matplotlib, optional)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo.formats.writer import write_file_atomic

from .errors import PlotUnavailable


@dataclass(frozen=True)
class Point:
    label: str
    size_bytes: int
    accuracy: float
    role: str  # "teacher", "this" or "sibling"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class _Style:
    marker: str
    color: str
    size: float  # matplotlib's `s`: marker area in points^2


_STYLE = {
    "teacher": _Style(marker="s", color="#444444", size=70),
    "this": _Style(marker="*", color="#d62728", size=220),
    "sibling": _Style(marker="o", color="#1f77b4", size=50),
}


def plot_accuracy_vs_size(points: list[Point], path: Path, *, metric: str = "accuracy", title: str = "") -> Path:
    """Write a PNG scatter of `points` (size on a log axis) to `path`, atomically."""
    if not have_matplotlib():
        raise PlotUnavailable("matplotlib is not installed", hint="pip install 'zoo-compress[cards]'")
    import matplotlib

    matplotlib.use("Agg")  # no display here, and never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    try:
        for role in ("sibling", "teacher", "this"):
            group = [p for p in points if p.role == role]
            if not group:
                continue
            ax.scatter(
                [p.size_bytes / 1e6 for p in group],
                [100 * p.accuracy for p in group],
                zorder=3,
                label={"teacher": "dense teacher", "this": "this model", "sibling": "other zoo models"}[role],
                marker=_STYLE[role].marker,
                color=_STYLE[role].color,
                s=_STYLE[role].size,
            )
            for p in group:
                ax.annotate(
                    p.label,
                    (p.size_bytes / 1e6, 100 * p.accuracy),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=8,
                )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
        sizes = [p.size_bytes / 1e6 for p in points]
        accs = [100 * p.accuracy for p in points]
        ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
        low, high = min(accs), max(accs)
        pad = max(1.0, (high - low) * 0.15)
        ax.set_ylim(low - pad, high + pad)
        ax.set_xlabel("checkpoint size on disk (MB, log scale)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        if title:
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        # fixed metadata: the same facts give the same bytes
        write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path
