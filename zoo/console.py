"""The `zoo` console script. Signals are handled before anything heavy is imported: Ctrl-C while torch and
transformers load exits with 130 and one line, not a traceback, and SIGTERM (a scheduler's kill, `timeout`)
becomes an exception like Ctrl-C, so outputs that were being staged are removed on the way out."""

from __future__ import annotations

import os
import signal
import sys


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so `finally` blocks and writers clean up."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated


def _exit_now(code: int) -> None:
    # By the time we get here the exception has unwound every `with` and `finally`: outputs are cleaned up.
    # os._exit, because CPython 3.11 remembers a KeyboardInterrupt raised inside exec() (dataclasses
    # and torch create functions that way while importing) as unhandled, and at a normal exit kills the
    # process with SIGINT even though it was handled: the shell would see -2, not 130.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from .cli import app

        app(prog_name="zoo")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        _exit_now(130)
    except Terminated:
        print("terminated", file=sys.stderr)
        _exit_now(143)
    except SystemExit as exc:
        if exc.code in (130, 143):  # the command caught the signal and said so (zoo.cli)
            _exit_now(exc.code)
        raise
