"""Codec parameters as pydantic models. A codec chain is one `CodecSpec`, possibly nested
(N:M stores its kept values through a value codec; Kronecker stores its factors through one).

The same models appear in recipes (what to do) and in the manifest (what was done), so a
manifest entry is always a complete description of how to decode its tensors.

Each spec is defined beside its codec, in formats/codecs/; the unions are built from the codec registry, and
every registered codec's spec class is an attribute of this module by its class name (`IntSpec`, `NMSpec`...),
so a new codec needs no line here."""

from __future__ import annotations

from typing import Any

from .codecs import CODEC_NAMES, VALUE_CODEC_NAMES, CodecSpec, ValueSpec, registered
from .codecs.base import FloatDType, SpecBase

SPECS: dict[str, type[SpecBase]] = {codec.spec.__name__: codec.spec for codec in registered().values()}


def __getattr__(name: str) -> Any:  # Any: each spec class has its own fields
    try:
        return SPECS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *SPECS])


__all__ = ["CODEC_NAMES", "SPECS", "VALUE_CODEC_NAMES", "CodecSpec", "FloatDType", "SpecBase", "ValueSpec"]
