"""Knowledge distillation on transformers' Trainer: the loss lives in a `compute_loss` override, so
checkpointing, mixed precision, and multi-GPU (`accelerate launch` / `torchrun`) come from Trainer.

loss = labels * CE(gold) + logits * T^2 * KL(teacher_T || student_T)
       + hidden * mean_j MSE(student hidden_j, teacher hidden_map[j])
       + attention * mean_j MSE(student attention_j, teacher attention_map[j])"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize
from transformers import Trainer, TrainerCallback

from zoo.formats.codecs.nm import NMFake

from ..errors import RecipeError
from ..recipes.training import DistillSpec, DropoutSchedule


def hidden_map(student_layers: int, kept: list[int] | None) -> list[int]:
    """Teacher hidden-state index for each student hidden state (index 0 is the embeddings)."""
    kept = kept if kept is not None else list(range(student_layers))
    return [0] + [k + 1 for k in kept]


class DistillTrainer(Trainer):
    def __init__(self, *args, teacher=None, distill: DistillSpec, layer_map: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.distill = distill
        self.layer_map = layer_map
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        d = self.distill
        hidden, attention = d.hidden > 0, d.attention > 0
        out = model(**inputs, output_hidden_states=hidden, output_attentions=attention)
        loss = d.labels * out.loss if d.labels > 0 else out.logits.new_zeros(())
        if self.teacher is not None and (d.logits > 0 or hidden or attention):
            if next(self.teacher.parameters()).device != out.logits.device:
                self.teacher.to(out.logits.device)
            with torch.no_grad():
                t = self.teacher(**inputs, output_hidden_states=hidden, output_attentions=attention)
            if d.logits > 0:
                temp = d.temperature
                kl = F.kl_div(
                    F.log_softmax(out.logits / temp, -1),
                    F.log_softmax(t.logits / temp, -1),
                    log_target=True,
                    reduction="batchmean",
                )
                loss = loss + d.logits * temp * temp * kl
            if hidden:
                pairs = [(s, t.hidden_states[j]) for s, j in zip(out.hidden_states, self.layer_map)]
                loss = loss + d.hidden * torch.stack([F.mse_loss(s, tt) for s, tt in pairs]).mean()
            if attention:
                if not out.attentions or not t.attentions:
                    raise RecipeError(
                        "attention distillation needs attention probabilities, which this model's "
                        "attention implementation does not return",
                        hint="set distill.attention: 0",
                    )
                pairs = [(s, t.attentions[j - 1]) for s, j in zip(out.attentions, self.layer_map[1:])]
                loss = loss + d.attention * torch.stack([F.mse_loss(s, tt) for s, tt in pairs]).mean()
        # evaluation gathers only the logits (hidden states of every batch would not concatenate)
        return (loss, {"logits": out.logits}) if return_outputs else loss


class CompressionSchedule(TrainerCallback):
    """Scheduled dropout and N:M mask updates (gradual pruning from dense during the ramp)."""

    def __init__(self, model, *, dropout: DropoutSchedule | None, mask_interval: int, prune_ramp: float):
        self.model = model
        self.dropout = dropout
        self.mask_interval = mask_interval
        self.prune_ramp = prune_ramp

    def _nm_modules(self):
        for module in self.model.modules():
            if parametrize.is_parametrized(module, "weight"):
                fake = module.parametrizations.weight[0]
                if isinstance(fake, NMFake):
                    yield module.parametrizations.weight.original, fake

    def on_step_begin(self, args, state, control, **kwargs):
        progress = state.global_step / max(state.max_steps, 1)
        if self.dropout is not None:
            p = self.dropout.start + (self.dropout.end - self.dropout.start) * progress
            for module in self.model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = p
        due = self.mask_interval and state.global_step % self.mask_interval == 0
        ramping = self.prune_ramp > 0 and progress <= self.prune_ramp + 1 / max(state.max_steps, 1)
        if not (due or ramping):
            return
        for latent, fake in self._nm_modules():
            n, m = fake.spec.n, fake.spec.m
            share = min(progress / self.prune_ramp, 1.0) if self.prune_ramp > 0 else 1.0
            keep = max(n, m - round((m - n) * share))
            if due or keep != int(fake.keep):
                fake.update_mask(latent, keep)
