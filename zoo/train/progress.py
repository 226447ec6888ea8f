"""Progress of transformers' Trainer: a rich bar (steps, epoch, the latest loss and eval metric) in a terminal,
and plain lines where stderr is not one (a batch job, nohup, CI): every ZOO_LOG_EVERY seconds (30) the step,
epoch, loss, elapsed time and ETA, and each evaluation's result. Under a launcher only the job's rank 0 shows
progress: the other processes train the same steps, silently."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from ..console import Ticker


class RichProgress(TrainerCallback):
    def __init__(self, description: str, console: Console | None = None, *, lines: bool | None = None):
        self.description = description
        self.console = console or Console(stderr=True)
        self.lines = (not self.console.is_terminal) if lines is None else lines
        self.bar: Progress | None = None
        self.ticker: Ticker | None = None
        self.task = None
        self.facts: dict[str, str] = {}

    def _text(self) -> str:
        facts = "  ".join(f"{k} {v}" for k, v in self.facts.items())
        return f"[bold]{self.description}[/bold] {facts}"

    def _line(self, text: str) -> None:
        self.console.print(f"{self.description}: {text}", highlight=False, markup=False)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one bar for the whole job, from rank 0
            return
        if self.lines:
            self.ticker = Ticker()
            self._line(f"{state.max_steps} steps, {args.num_train_epochs:g} epochs")
            return
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(self._text(), total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.facts["epoch"] = f"{state.epoch or 0:.2f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step, description=self._text())
        elif self.ticker is not None and self.ticker.due(state.global_step, state.max_steps):
            loss = f", loss {self.facts['loss']}" if "loss" in self.facts else ""
            self._line(
                f"step {state.global_step}/{state.max_steps}, epoch {self.facts['epoch']}{loss}, "
                f"{self.ticker.timing(state.global_step, state.max_steps)}"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if "loss" in logs:
            self.facts["loss"] = f"{logs['loss']:.4f}"
        if "eval_accuracy" in logs:
            self.facts["val acc"] = f"{logs['eval_accuracy']:.4f}"
            if self.ticker is not None:
                self._line(f"validation accuracy {logs['eval_accuracy']:.4f} at step {state.global_step}")
        if self.bar is not None:
            self.bar.update(self.task, description=self._text())

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
