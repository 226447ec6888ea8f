"""The `pruning:` section of a recipe: block movement pruning of attention heads and FFN neurons.

The blocks are the structures a dense layer can lose physically: one attention head (its rows of
the query, key and value projections and its columns of the output projection) and a block of
`ffn_block` consecutive FFN neurons (their rows of the intermediate layer and columns of the output
layer). Every block has a movement score (Sanh et al.: minus the accumulated gradient of the loss
with respect to a gate on the block's output); over the ramp the share of blocks switched off
grows along a cubic schedule to `heads` / `ffn`, the lowest-scoring blocks going first (a block
can come back while the ramp runs). After training the switched-off blocks are removed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PruningSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heads: float = Field(0.0, ge=0, lt=1, description="share of all attention heads removed")
    ffn: float = Field(0.0, ge=0, lt=1, description="share of all FFN neurons removed (in blocks of ffn_block)")
    ffn_block: int = Field(32, ge=1, description="FFN neurons scored and removed together (must tile the FFN width)")
    ramp: tuple[float, float] = Field(
        (0.1, 0.7), description="share of training over which pruning grows to its target"
    )
    interval: int = Field(10, ge=1, description="masks are recomputed from the scores every this many steps")

    @model_validator(mode="after")
    def _check(self) -> PruningSpec:
        if self.heads == 0 and self.ffn == 0:
            raise ValueError("pruning needs heads > 0 or ffn > 0")
        start, end = self.ramp
        if not 0 <= start < end <= 1:
            raise ValueError(f"ramp must be 0 <= start < end <= 1, got {self.ramp}")
        return self
