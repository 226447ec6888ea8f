"""Fidelity: how closely a compressed model follows its dense reference on sample inputs.

Always: cosine similarity of the base models' mean-pooled last hidden states. For two models that both hold
a trained head: also agreement of the predicted class, and KL(reference || model) of the output
distributions. Never through a head the weights lack (it would be random). No labels are needed, so it works
for any text model and before any fine-tuning."""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import TaskError


def sample_texts(name: str = "samples.txt") -> list[str]:
    """The built-in sample sentences (calibration, sensitivity, `zoo eval --task fidelity`), or with
    name="fidelity.txt" the held-out ones that a post-training compress measures on."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def calibration_texts(source: str | Path | None, limit: int) -> tuple[list[str], str]:
    """Up to `limit` texts to calibrate on, and what they are: the built-in sample sentences (None), the lines
    of a text file, or a seeded subset of the texts of a data directory's train split (labels unused)."""
    if source is None:
        texts = sample_texts()[:limit]
        return texts, f"{len(texts)} built-in sample sentences"
    path = Path(source)
    if path.is_file():
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskError(f"cannot read calibration text {path}: {exc}") from None
        texts = lines[:limit]
        where = path.name
    elif path.is_dir():
        from .text import TextClassification

        examples = TextClassification(name="calibration", source=str(path)).texts("train")
        texts = [examples[i] for i in sorted(random.Random(0).sample(range(len(examples)), min(limit, len(examples))))]
        where = f"{path.name} train"
    else:
        raise TaskError(
            f"calibration text {path} does not exist",
            hint="give a .txt file (one text per line) or a data directory with a train split",
        )
    if not texts:
        raise TaskError(f"calibration text {path} holds no text")
    return texts, f"{len(texts)} texts from {where}"


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


def head_fidelity(model, reference, batch: dict) -> dict[str, float]:
    """Agreement of the predicted class and KL(reference || model) of two models' heads on one batch; empty
    when they have no head (their outputs hold no logits)."""
    got, head = model_outputs(model, batch)
    want, _ = model_outputs(reference, batch)
    if not head:
        return {}
    return {
        "agreement": float((got.argmax(-1) == want.argmax(-1)).float().mean()),
        "kl": float(F.kl_div(got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="batchmean")),
    }


def text_batch(model_dir, texts: list[str], max_length: int = 128) -> dict:
    from .text import load_tokenizer

    tok = load_tokenizer(model_dir)
    return dict(tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def _base_states(model, batch: dict) -> torch.Tensor:
    """Mean-pooled last hidden states of the base model (an encoder-decoder's encoder), never a head's output."""
    encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
    with torch.inference_mode():
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state.float()
    m = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def base_cosine(model, reference, batch: dict) -> float:
    """Mean cosine of two loaded models' base-model embeddings (their heads play no part)."""
    got, want = _base_states(model.base_model, batch), _base_states(reference.base_model, batch)
    return float(F.cosine_similarity(got, want).mean())


def embedding_cosine(
    model_dir: str | Path,
    reference_dir: str | Path,
    texts: list[str],
    *,
    mode: str = "materialize",
    max_length: int = 128,
) -> float:
    """Mean cosine of the base models' mean-pooled last hidden states (an encoder-decoder's encoder), `model_dir`
    (loaded in `mode`) against `reference_dir`: never through a head, which may be one the weights lack."""
    from zoo.loaders import load, quiet_transformers

    batch = text_batch(model_dir, texts, max_length=max_length)
    with quiet_transformers():
        model = load(model_dir, task="feature-extraction", mode=mode).eval()
        reference = load(reference_dir, task="feature-extraction").eval()
    return base_cosine(model, reference, batch)


def embedding_fidelity(
    model_dir: str | Path, reference_dir: str | Path, reference_name: str | None = None, *, max_length: int = 128
):
    """Mean cosine of the base model's mean-pooled last hidden states, `model_dir` against the dense
    `reference_dir`, on built-in sentences that no calibration uses: what a sentence-embedding user gets, and a sign of
    how much a classifier fine-tuned from it would have to recover. No labels, no heads (a head the weights
    lack would be random). None for a model that reads no text (no tokenizer: images, audio)."""
    from zoo.formats import FidelityRecord

    from .text import load_tokenizer

    try:
        load_tokenizer(model_dir)
    except TaskError:
        return None
    texts = sample_texts("fidelity.txt")  # held out: GPTQ and the search fit to samples.txt
    value = embedding_cosine(model_dir, reference_dir, texts, max_length=max_length)
    return FidelityRecord(
        value=value,
        measured_on=f"{len(texts)} held-out built-in sentences",
        n_examples=len(texts),
        reference=str(reference_name or reference_dir),
    )
