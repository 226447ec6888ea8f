"""The `gptq:` section of a recipe: post-training rounding with GPTQ (zoo compress without --task).

Without it, post-training compression rounds every weight to the nearest point of its codec's grid. With it,
the linear layers whose codec GPTQ serves (int-N on a symmetric zero-preserving grid, alone or as N:M values)
are rounded so that their outputs on calibration text move least (zoo.methods.gptq): the built-in sample
sentences, or the user's own text (`zoo compress --calibration`). Fine-tuning with --task trains the codec's
values directly and does not use it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GPTQSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibration: int = Field(128, ge=1, le=4096, description="calibration texts measured (at most this many)")
    max_length: int = Field(128, ge=8, description="tokens per calibration text")
    damp: float = Field(0.01, gt=0, le=1, description="added to the Hessian's diagonal, as a share of its mean")
    calibrated_on: str | None = Field(None, description="what the rounding was measured on (set by zoo)")
