"""The `search:` section of a recipe (NxMiFormer's ratio-budget search), and the record a search leaves.

A recipe with a `search:` section does not fix one codec for its modules: for every module its rules
select, zoo measures the loss increase of each candidate setting (bits x sparsity pattern) on a small
calibration set, then picks one setting per module so that the whole checkpoint meets the target ratio
against the dense one with the least total loss increase. The result is an ordinary recipe with one rule per
module, and a `searched:` record (target, reached ratio, how sensitivity was measured, per-module choice)
that goes into the manifest and the model card."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_PATTERN = re.compile(r"^(dense|(\d+):(\d+))$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchSpec(_Spec):
    target_ratio: float = Field(
        12.0,
        gt=1,
        description="the whole checkpoint at least this many times smaller than the dense one's weight files",
    )
    bits: list[int] = Field(default_factory=lambda: [8, 4, 2], min_length=1, description="int-N value widths")
    patterns: list[str] = Field(
        default_factory=lambda: ["dense", "2:4", "1:4"], min_length=1, description="'dense' or N:M sparsity patterns"
    )
    group_size: int | None = Field(128, ge=1, description="int-N scale group (None: one scale per row)")
    calibration: int = Field(32, ge=1, le=4096, description="examples (task) or sample sentences (fidelity) measured")
    measure: Literal["block", "model"] = Field(
        "block",
        description="block: each (module, setting) scored by its block's output error on the dense inputs, "
        "put into loss units by three settings per module measured end to end; model: every pair end to end",
    )

    @field_validator("bits")
    @classmethod
    def _bits(cls, bits: list[int]) -> list[int]:
        bad = [b for b in bits if not 1 <= b <= 8]
        if bad:
            raise ValueError(f"bits must be 1-8, got {bad}")
        return sorted(set(bits), reverse=True)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            m = _PATTERN.match(p)
            if not m or (m.group(2) and not 1 <= int(m.group(2)) < int(m.group(3)) <= 16):
                raise ValueError(f"pattern {p!r} is not 'dense' or N:M with 1 <= N < M <= 16")
        return list(dict.fromkeys(patterns))


class SearchChoice(_Spec):
    codec: str = Field(description="the chosen setting, as `zoo info` names it")
    nbytes: int
    loss_increase: float = Field(description="measured loss increase of this module alone at this setting")


class SearchRecord(_Spec):
    target_ratio: float
    achieved_ratio: float = Field(description="the dense checkpoint's weight bytes / the estimated bytes of this one")
    estimated_nbytes: int | None = Field(None, description="the whole checkpoint's bytes as the search counted them")
    measure: str = Field(description="what the loss is and what it was measured on")
    candidates: list[str]
    total_loss_increase: float
    modules: dict[str, SearchChoice]
