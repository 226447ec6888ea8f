"""The `training:` section of a recipe: how compression-aware fine-tuning runs (`zoo compress --task`).

Every field has a default, so a recipe without the section still trains; command-line options
(--epochs, --learning-rate, --batch-size) override the recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DistillSpec(_Spec):
    """Loss = labels*CE(gold) + logits*T^2*KL(teacher_T || student_T) + hidden*MSE(mapped hidden states)
    + attention*MSE(mapped attention probabilities)."""

    temperature: float = Field(2.0, gt=0)
    labels: float = Field(0.5, ge=0)
    logits: float = Field(1.0, ge=0)
    hidden: float = Field(1.0, ge=0)
    attention: float = Field(0.0, ge=0)


class DropoutSchedule(_Spec):
    """Scheduled dropout: every dropout probability moves linearly from `start` to `end` over
    training (the deep-compression paper lowers it while the weights are quantized)."""

    start: float = Field(0.1, ge=0, lt=1)
    end: float = Field(0.0, ge=0, lt=1)


class TrainingSpec(_Spec):
    required: bool = Field(
        False,
        description="the recipe makes a usable model only with fine-tuning (--task): a post-training "
        "compress is refused unless --allow-untrained",
    )
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_length: int | None = Field(
        None, ge=8, description="tokens per text example [default: the teacher's training length, else 64]"
    )
    seed: int = Field(42, ge=0, description="seeds the training data order and dropout (the Trainer seed)")
    distill: DistillSpec = Field(default_factory=DistillSpec)
    dropout: DropoutSchedule | None = None
    keep_layers: list[int] | None = Field(
        None, description="layer reduction (XTC): the student keeps these teacher layers (0-based), in order"
    )
    clip: Literal["absmax", "learned"] = Field(
        "absmax", description="int-N scales: from each group's |w| max every step, or learned clip values (LSQ)"
    )
    clip_init_percentile: float = Field(
        100.0, gt=50, le=100, description="learned clip starts at this percentile of |w|"
    )
    mask_interval: int = Field(
        50, ge=0, description="N:M masks are recomputed from the latent weights every this many steps (0: fixed)"
    )
    prune_ramp: float = Field(
        0.0, ge=0, lt=1, description="share of training over which N:M pruning tightens gradually from dense"
    )

    @field_validator("keep_layers")
    @classmethod
    def _layers(cls, keep: list[int] | None) -> list[int] | None:
        if keep is not None:
            if not keep:
                raise ValueError("keep_layers must name at least one layer")
            if any(i < 0 for i in keep) or len(set(keep)) != len(keep) or keep != sorted(keep):
                raise ValueError("keep_layers must be distinct, ascending, 0-based layer indices")
        return keep
