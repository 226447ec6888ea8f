"""The manifest's records that name no codec: a file's sha256 and size, and a measured result (pydantic only).

They need no codec, so no torch: the registry's index copies them from each manifest, and `zoo list` reads that
index without loading the codecs. formats.manifest, whose records all share `Record` as their base, re-exports
them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    # strict: a manifest is data a checkpoint brings, so `true` is no version and "384" no dimension
    model_config = ConfigDict(extra="forbid", strict=True)


Count = Annotated[int, Field(ge=0)]  # bytes, examples, steps: never negative


class FileInfo(Record):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    nbytes: Count


class EvalResult(Record):
    role: Literal["teacher", "compressed"]
    task: str
    dataset: str
    split: str
    metric: str
    value: float
    n_examples: Count
