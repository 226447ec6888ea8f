"""Typed errors: the base of every zoo error, and the errors of the format layer.

Every error zoo raises on purpose is a `ZooError`; the CLI prints its message and `hint` on one line each and
exits non-zero. Anything else is a bug. Each package layer keeps its errors in one module (formats.errors,
loaders.errors, cards.errors, zoo.errors), all under `ZooError`; an error also subclasses the stdlib error it
is a case of (ValueError for bad content, FileNotFoundError, FileExistsError...), so `except ValueError` code
written for the stdlib catches it too.

An error carries, besides its message and hint, the model `module` and the file or directory `path` it
concerns where those are known. Code that knows more of the context than the raiser re-raises a copy with it
(`raise exc.with_context(module=name) from None`), which keeps the error's type and fields."""

from __future__ import annotations

import copy
from pathlib import Path


class ZooError(Exception):
    """Base of all deliberate zoo errors. `hint` tells the user what to do next; `module` and `path` name the
    model module and the file or directory the error concerns (None where none is known)."""

    hint: str | None = None
    module: str | None = None
    path: str | None = None

    def __init__(
        self, message: str, *, hint: str | None = None, module: str | None = None, path: str | Path | None = None
    ):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        if module is not None:
            self.module = module
        if path is not None:
            self.path = str(path)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def with_context(
        self, *, module: str | None = None, path: str | Path | None = None, hint: str | None = None
    ) -> ZooError:
        """A copy of this error (same type, same fields) that also names the `module` and/or `path` it concerns:
        its message starts with them ("module M: ..." or "PATH: ..."), and a new `hint` replaces the old one."""
        new = copy.copy(self)
        prefix = ""
        if path is not None:
            new.path = str(path)
            prefix += f"{path}: "
        if module is not None:
            new.module = module
            prefix += f"module {module}: "
        if hint is not None:
            new.hint = hint
        new.args = (prefix + self.message, *self.args[1:])
        return new


class FormatError(ZooError, ValueError):
    """A checkpoint on disk is not a valid zoo checkpoint (corrupt, inconsistent, unsupported)."""


class ManifestError(FormatError):
    """The manifest in config.json is missing, malformed, or of an unsupported version."""


class ChecksumError(FormatError):
    """A file's sha256 differs from the one recorded when it was written."""


class CodecError(ZooError, ValueError):
    """A tensor cannot be encoded or decoded with the requested codec parameters."""


class PatternError(CodecError):
    """Weights do not have the structure a codec claims (e.g. not N:M sparse, not on a grid)."""


class OutputExistsError(ZooError, FileExistsError):
    """The output path already exists and overwriting was not asked for."""


__all__ = [
    "ChecksumError",
    "CodecError",
    "FormatError",
    "ManifestError",
    "OutputExistsError",
    "PatternError",
    "ZooError",
]
