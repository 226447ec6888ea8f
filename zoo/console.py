"""The `zoo` console script. Signals are handled before anything heavy is imported: Ctrl-C while torch and
transformers load exits with 130 and one line, not a traceback, and SIGTERM (a scheduler's kill, `timeout`)
becomes an exception like Ctrl-C, so outputs that were being staged are removed on the way out. A second
signal of the same kind kills at once."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}  # by signal number, as handlers get it
LOG_EVERY_ENV = "ZOO_LOG_EVERY"  # seconds between progress lines where no bar is drawn (default 30)


def log_every_s() -> float:
    """How often long work prints a progress line where stderr is not a terminal (a batch job, nohup, CI)."""
    try:
        return max(0.0, float(os.environ.get(LOG_EVERY_ENV, "30")))
    except ValueError:
        return 30.0


def duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Ticker:
    """Says when a progress line is due (every log_every_s(), and at the end) and what the ETA is."""

    def __init__(self):
        self.start = self.last = time.monotonic()

    def due(self, done: int, total: int) -> bool:
        now = time.monotonic()
        if done >= total or now - self.last >= log_every_s():
            self.last = now
            return True
        return False

    def timing(self, done: int, total: int) -> str:
        elapsed = time.monotonic() - self.start
        left = f", about {duration(elapsed / done * (total - done))} left" if 0 < done < total else ""
        return f"{duration(elapsed)} elapsed{left}"


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever sys.stderr is when they are written."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_progress_logs() -> None:
    """zoo's own log lines (progress where no bar is drawn, warnings) go to stderr as plain lines."""
    logger = logging.getLogger("zoo")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


_received: list[int] = []


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so `finally` blocks and writers clean up."""


def signal_exit_code() -> int | None:
    """130 or 143 once Ctrl-C or SIGTERM has arrived, else None. An extension that calls back into Python
    (safetensors reading a tensor) may turn the exception the signal raised into an error of its own; the
    command still ends as interrupted, because the signal is remembered here."""
    return EXIT_CODES[_received[0]] if _received else None


def _on_signal(signum, frame) -> None:
    _received.append(signum)
    signal.signal(signum, signal.SIG_DFL)  # a second one kills at once
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def _exit_now(code: int) -> None:
    # By the time we get here the exception has unwound every `with` and `finally`: outputs are cleaned up.
    # os._exit, because CPython 3.11 remembers a KeyboardInterrupt raised inside exec() (dataclasses
    # and torch create functions that way while importing) as unhandled, and at a normal exit kills the
    # process with SIGINT even though it was handled: the shell would see -2, not 130.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job's ignored Ctrl-C stays ignored
        signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    show_progress_logs()
    try:
        from .cli import app

        app(prog_name="zoo")
    except (KeyboardInterrupt, Terminated):
        print("interrupted" if signal_exit_code() != 143 else "terminated", file=sys.stderr)
        _exit_now(signal_exit_code() or 130)
    except SystemExit as exc:
        if exc.code in (130, 143):  # the command caught the signal and said so (zoo.cli)
            _exit_now(exc.code)
        raise
