"""Fidelity: how closely a compressed model follows its dense reference on sample inputs.

For models with a head: agreement of the predicted class, and KL(reference || model) of the
output distributions. For models without one: cosine similarity of the mean-pooled last hidden
states. No labels are needed, so it works for any model and before any fine-tuning."""

from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F


def sample_texts() -> list[str]:
    text = resources.files(__package__).joinpath("samples.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@torch.inference_mode()
def model_outputs(model, batch: dict) -> tuple[torch.Tensor, bool]:
    model.eval()
    out = model(**batch)
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits.float(), True
    hidden = out.last_hidden_state.float()
    mask = batch.get("attention_mask")
    if mask is None:
        return hidden.mean(dim=1), False
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1), False


def fidelity(model, reference, batch: dict) -> dict[str, float]:
    """Agreement/KL (heads) or cosine (encoders) of `model` against `reference` on one batch."""
    got, head = model_outputs(model, batch)
    want, _ = model_outputs(reference, batch)
    result = {"cosine": float(F.cosine_similarity(got.flatten(1), want.flatten(1)).mean())}
    if head:
        result["agreement"] = float((got.argmax(-1) == want.argmax(-1)).float().mean())
        result["kl"] = float(F.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="batchmean"))
    return result


def text_batch(model_dir, texts: list[str], max_length: int = 128) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return dict(tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
