"""A rich progress bar for transformers' Trainer: steps, epoch, the latest loss and eval metric."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    def __init__(self, description: str, console: Console | None = None):
        self.description = description
        self.console = console or Console(stderr=True)
        self.bar: Progress | None = None
        self.task = None
        self.facts: dict[str, str] = {}

    def _text(self) -> str:
        facts = "  ".join(f"{k} {v}" for k, v in self.facts.items())
        return f"[bold]{self.description}[/bold] {facts}"

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(self._text(), total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.facts["epoch"] = f"{state.epoch or 0:.2f}"
            self.bar.update(self.task, completed=state.global_step, description=self._text())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.facts["loss"] = f"{logs['loss']:.4f}"
        if "eval_accuracy" in logs:
            self.facts["val acc"] = f"{logs['eval_accuracy']:.4f}"
        self.bar.update(self.task, description=self._text())

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
