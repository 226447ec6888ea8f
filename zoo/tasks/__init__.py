"""Tasks: labelled data, the head a model needs for it, and how it is scored.

    get_task("rotten_tomatoes", data="tests/data/rotten_tomatoes")        # local TSV files
    get_task("rotten_tomatoes")                                           # the Hugging Face dataset
    get_task("text-classification", data="my_dir", text_column="review")
    get_task("image-classification", data="fashion_mnist_dir")            # idx files or npz
    get_task("fashion_mnist")                                             # Debian's dataset-fashion-mnist

`fidelity` is not a labelled task: see `zoo.tasks.fidelity`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ZooError
from .base import SPLITS, Examples, Task, TaskError, accuracy, check_split, predict
from .image import ImageClassification, fashion_mnist_dir
from .text import TextClassification

# built-in name -> (kind, Hugging Face dataset used when no --data is given)
BUILTIN = {
    "rotten_tomatoes": ("text", "cornell-movie-review-data/rotten_tomatoes"),
    "sst2": ("text", "stanfordnlp/sst2"),
    "fashion_mnist": ("image", None),
    "text-classification": ("text", None),
    "image-classification": ("image", None),
}
TASK_NAMES = [*BUILTIN, "fidelity"]


def get_task(
    name: str,
    data: str | None = None,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    max_length: int | None = None,
    task_name: str | None = None,
    label_names: list[str] | None = None,
) -> Task:
    """The task `name` on `data` (a directory, a hub dataset, or the task's default). `task_name`: what its
    results are recorded under; `label_names`: names for integer labels 0..N-1 (text tasks)."""
    if name not in BUILTIN:
        hint = "fidelity needs no data: use `zoo eval DIR --task fidelity`" if name == "fidelity" else None
        raise TaskError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}", hint=hint)
    kind, hub = BUILTIN[name]
    if data is not None and data.startswith(("/", "./", "../", "~")) and not Path(data).expanduser().is_dir():
        raise TaskError(f"data directory {data} does not exist")
    if data is not None and data.startswith("~"):
        data = str(Path(data).expanduser())
    source = data or hub or (fashion_mnist_dir() if name == "fashion_mnist" else None)
    if source is None:
        what = "Debian's dataset-fashion-mnist is not installed" if name == "fashion_mnist" else "it has no default"
        raise TaskError(f"task {name} needs --data ({what})")
    if kind == "image":
        if label_names is not None:
            raise TaskError("--label-names applies to text tasks; image folders name their classes by subfolder")
        return ImageClassification(
            name=task_name or (name if name != "image-classification" else source), source=str(source)
        )
    task = TextClassification(
        name=name,
        source=str(source),
        text_column=text_column,
        label_column=label_column,
        given_name=task_name,
        given_labels=label_names,
    )
    if max_length is not None:
        task.max_length = max_length
    if name == "rotten_tomatoes" and text_column is None and not _is_dir(source):
        task.text_column = "text"
    return task


def _is_dir(source: str) -> bool:
    return Path(source).is_dir()


@dataclass(frozen=True)
class Score:
    metric: str
    value: float
    n_examples: int
    split: str


def evaluate(
    model,
    task: Task,
    model_dir,
    split: str = "test",
    *,
    limit: int | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
):
    """Accuracy of `model` on a split, and the logits (for agreement with a teacher)."""
    features = task.features(check_split(split), model_dir, limit=limit, max_length=max_length)
    logits = predict(
        model, features, task.collator(model_dir), batch_size=batch_size, what=f"evaluating on {task.dataset} {split}"
    )
    labels = [f["labels"] for f in features]
    if logits.shape[-1] != len(task.label_names):
        raise TaskError(
            f"the model predicts {logits.shape[-1]} classes but task {task.name} has {len(task.label_names)}",
            hint="fine-tune it for this task first (`zoo finetune`)",
        )
    return Score("accuracy", accuracy(logits, labels), len(labels), split), logits


__all__ = [
    "BUILTIN",
    "SPLITS",
    "TASK_NAMES",
    "Examples",
    "Score",
    "Task",
    "TaskError",
    "ZooError",
    "evaluate",
    "get_task",
    "predict",
]
