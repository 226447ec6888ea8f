"""The `zoo` console script. Signals are handled before anything heavy is imported: Ctrl-C while torch and
transformers load exits with 130 and one line, not a traceback, and SIGTERM (a scheduler's kill, `timeout`)
becomes an exception like Ctrl-C, so outputs that were being staged are removed on the way out. A second
signal of the same kind kills at once."""

from __future__ import annotations

import os
import signal
import sys

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
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
