"""What every task offers: labelled examples per split, the model class to load, and a metric.

A task turns a split into model inputs (`features`) once, so training and evaluation read the
same tensors. Evaluation runs batched in inference mode and returns the logits, so accuracy,
teacher-student agreement and KL all come from one pass."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import TaskError

logger = logging.getLogger("zoo")

SPLITS = ("train", "validation", "test")


@dataclass
class Examples:
    """One split: raw inputs (texts or image arrays) and integer labels."""

    inputs: list[Any] | torch.Tensor
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, limit: int | None, seed: int = 0) -> Examples:
        """A seeded random subset of `limit` examples (all of them when limit is None or larger)."""
        if limit is None or limit >= len(self):
            return self
        picked = sorted(random.Random(seed).sample(range(len(self)), limit))
        inputs = self.inputs[picked] if isinstance(self.inputs, torch.Tensor) else [self.inputs[i] for i in picked]
        return Examples(inputs, [self.labels[i] for i in picked])


class Task(Protocol):
    name: str
    auto_task: str  # key of loaders.TASKS: the head the model needs
    label_names: list[str]  # filled from the train split

    @property
    def dataset(self) -> str:
        """What the numbers were measured on, for the manifest and the card."""

    @property
    def num_labels(self) -> int: ...

    def examples(self, split: str) -> Examples: ...

    def features(
        self, split: str, model_dir, *, limit: int | None = None, max_length: int | None = None
    ) -> list[dict]: ...

    def collator(self, model_dir): ...

    def name_labels_from(self, model_dir) -> None:
        """Take a fine-tuned model's label names where the data gives only numbers (text tasks)."""


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}", hint=f"choose one of {', '.join(SPLITS)}")
    return split


@torch.inference_mode()
def predict(model, features: list[dict], collate, *, batch_size: int = 64, what: str = "evaluating") -> torch.Tensor:
    """Logits of `model` for every feature, in order (labels are not passed to the model). A long run logs a
    progress line (logger "zoo") every ZOO_LOG_EVERY seconds."""
    from ..console import Ticker

    model.eval()
    device = next(model.parameters()).device
    out = []
    ticker, total = Ticker(), -(-len(features) // batch_size)
    for i, start in enumerate(range(0, len(features), batch_size)):
        batch = collate([{k: v for k, v in f.items() if k != "labels"} for f in features[start : start + batch_size]])
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(model(**batch).logits.float().cpu())
        if i + 1 < total and ticker.due(i + 1, total):
            logger.info(f"{what}: batch {i + 1}/{total}, {ticker.timing(i + 1, total)}")
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: list[int] | torch.Tensor) -> float:
    return float((logits.argmax(-1) == torch.as_tensor(labels)).float().mean())
