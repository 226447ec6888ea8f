"""Typed errors. Every error zoo raises on purpose is a `ZooError`; the CLI prints its
message and `hint` on one line each and exits non-zero. Anything else is a bug."""

from __future__ import annotations


class ZooError(Exception):
    """Base of all deliberate zoo errors. `hint` tells the user what to do next."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class FormatError(ZooError):
    """A checkpoint on disk is not a valid zoo checkpoint (corrupt, inconsistent, unsupported)."""


class ManifestError(FormatError):
    """The manifest in config.json is missing, malformed, or of an unsupported version."""


class ChecksumError(FormatError):
    """A file's sha256 differs from the one recorded when it was written."""


class CodecError(ZooError):
    """A tensor cannot be encoded or decoded with the requested codec parameters."""


class PatternError(CodecError):
    """Weights do not have the structure a codec claims (e.g. not N:M sparse, not on a grid)."""


class OutputExistsError(ZooError):
    """The output path already exists and overwriting was not asked for."""
