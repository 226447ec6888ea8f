"""Ratio-budget search (NxMiFormer): per-layer settings that meet a compression ratio with the least loss.

1. Candidates: every `bits` x `patterns` of the recipe's `search:` section, as codecs (int-N, zero-preserving,
   symmetric, group `group_size`; N:M patterns store their kept values with that int-N codec).
2. Sensitivity: for each searched module and candidate, the module's weight is replaced by what the codec
   stores (decode(encode(w)), exactly what the checkpoint would hold), one module at a time, and its
   distance from the unmodified model is measured on a small calibration set: KL of the output
   distributions (models with a head) or 1 - cosine of mean-pooled hidden states (encoders), on task
   training examples with --task, else on built-in sample sentences. A distance to the dense model is never
   negative, so unlike a labelled loss it cannot credit a setting with noise that happens to help.
3. Choice: a multiple-choice knapsack solved exactly by dynamic programming over bytes: one candidate per
   module, total stored bytes <= fp32 bytes / target ratio, least summed loss increase.
The result is an ordinary recipe with one rule per module and a `searched` record for the manifest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from formats import codecs
from formats.spec import CodecSpec, IntSpec, NMSpec

from .architecture import layer_kind
from .errors import CodecError, RecipeError
from .recipes import Recipe, Rule
from .recipes.search import SearchChoice, SearchRecord, SearchSpec

LossFn = Callable[[nn.Module], float]
ProgressFn = Callable[[int, int], None]  # (done, total)


def candidates(spec: SearchSpec) -> list[CodecSpec]:
    out: list[CodecSpec] = []
    for pattern in spec.patterns:
        for bits in spec.bits:
            values = IntSpec(bits=bits, group_size=spec.group_size, symmetric=True, zero_preserving=True)
            if pattern == "dense":
                out.append(values)
            else:
                n, m = map(int, pattern.split(":"))
                out.append(NMSpec(n=n, m=m, values=values))
    return out


@dataclass(frozen=True)
class Target:
    name: str  # module path in the live model
    shape: tuple[int, int]


def searched_modules(model: nn.Module, recipe: Recipe) -> list[Target]:
    """The modules of `model` the recipe's rules select (the ones the search decides)."""
    found = [Target(name, tuple(module.weight.shape)) for name, module in model.named_modules()
             if (kind := layer_kind(module)) and recipe.codec_for(name, kind) is not None]
    if not found:
        raise RecipeError(f"recipe {recipe.name} selects no module of the model to search")
    return found


def check_reachable(targets: list[Target], spec: SearchSpec) -> None:
    """Fail before any measuring or training when no combination of candidates meets the target."""
    cands = candidates(spec)
    for t in targets:
        for c in cands:
            try:
                codecs.layout(t.shape, c)
            except CodecError as exc:  # a pattern that does not tile the layer, a group that does not divide it
                raise RecipeError(
                    f"search candidate {c.describe()} cannot store {t.name} {t.shape[0]}x{t.shape[1]}: {exc}",
                    hint="drop that pattern or group size from the recipe's search section",
                ) from None
    fp32 = sum(4 * math.prod(t.shape) for t in targets)
    smallest = sum(min(codecs.nbytes(t.shape, c) for c in cands) for t in targets)
    if fp32 / smallest < spec.target_ratio:
        raise RecipeError(
            f"target ratio {spec.target_ratio:g}x cannot be reached: the smallest candidates give "
            f"{fp32 / smallest:.2f}x for these {len(targets)} modules",
            hint=f"ask for at most {math.floor(fp32 / smallest * 10) / 10:g}x, or add fewer bits / sparser patterns",
        )


@torch.no_grad()
def measure(model: nn.Module, targets: list[Target], cands: list[CodecSpec], loss: LossFn,
            progress: ProgressFn | None = None) -> tuple[float, np.ndarray]:
    """Base loss, and the loss increase of each (module, candidate) with only that module changed."""
    model.eval()
    base = loss(model)
    increase = np.zeros((len(targets), len(cands)))
    total, done = len(targets) * len(cands), 0
    for i, t in enumerate(targets):
        weight = model.get_submodule(t.name).weight
        original = weight.detach().clone()
        try:
            for j, c in enumerate(cands):
                stored = codecs.decode(codecs.encode(original.float(), c), c, t.shape)
                weight.copy_(stored.to(weight.dtype))
                increase[i, j] = loss(model) - base
                done += 1
                if progress is not None:
                    progress(done, total)
        finally:
            weight.copy_(original)
    return base, increase


def choose(costs: np.ndarray, losses: np.ndarray, budget: int, resolution: int = 20000) -> list[int]:
    """Exact multiple-choice knapsack by DP on bytes rounded up to budget/resolution units: one column per
    row, summed cost <= budget, least summed loss. Rounding up keeps every answer within the budget."""
    unit = max(1, math.ceil(budget / resolution))
    units = np.ceil(costs / unit).astype(np.int64)
    cap = budget // unit
    inf = float("inf")
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    picks = []
    for i in range(costs.shape[0]):
        new = np.full(cap + 1, inf)
        pick = np.full(cap + 1, -1, dtype=np.int64)
        for j in range(costs.shape[1]):
            u = units[i, j]
            if u > cap:
                continue
            shifted = np.full(cap + 1, inf)
            shifted[u:] = best[: cap + 1 - u] + losses[i, j]
            better = shifted < new
            new[better] = shifted[better]
            pick[better] = j
        best = new
        picks.append(pick)
    end = int(np.argmin(best))
    if not np.isfinite(best[end]):
        raise RecipeError("no combination of the search's candidates fits the budget")
    chosen = []
    for i in range(costs.shape[0] - 1, -1, -1):
        j = int(picks[i][end])
        chosen.append(j)
        end -= int(units[i, j])
    return chosen[::-1]


def _rule_for(name: str, prefix: str, codec: CodecSpec) -> Rule:
    """A rule for exactly this module, whether the checkpoint names it with the model's prefix or without."""
    short = name.removeprefix(prefix + ".") if prefix else name
    return Rule(targets=[rf"(^|\.){re.escape(short)}$"], kinds=["linear"], codec=codec)


def run_search(model: nn.Module, recipe: Recipe, loss: LossFn, measure_text: str,
               progress: ProgressFn | None = None) -> Recipe:
    """The concrete recipe the search picks for `model` (eval mode, the dense reference)."""
    spec = recipe.search
    if spec is None:
        raise RecipeError(f"recipe {recipe.name} has no search section")
    targets = searched_modules(model, recipe)
    check_reachable(targets, spec)
    cands = candidates(spec)
    _base, increase = measure(model, targets, cands, loss, progress)
    costs = np.array([[codecs.nbytes(t.shape, c) for c in cands] for t in targets], dtype=np.float64)
    fp32 = sum(4 * math.prod(t.shape) for t in targets)
    budget = int(fp32 / spec.target_ratio)
    picks = choose(costs, increase, budget)
    stored = int(sum(costs[i, j] for i, j in enumerate(picks)))
    prefix = getattr(model, "base_model_prefix", "") or ""
    record = SearchRecord(
        target_ratio=spec.target_ratio, achieved_ratio=round(fp32 / stored, 4), measure=measure_text,
        candidates=[c.describe() for c in cands],
        total_loss_increase=round(float(sum(increase[i, j] for i, j in enumerate(picks))), 6),
        modules={t.name.removeprefix(prefix + ".") if prefix else t.name: SearchChoice(
            codec=cands[j].describe(), nbytes=int(costs[i, j]), loss_increase=round(float(increase[i, j]), 6))
            for i, (t, j) in enumerate(zip(targets, picks, strict=True))},
    )
    return recipe.model_copy(update={
        "description": f"per-layer search (target {spec.target_ratio:g}x, reached {record.achieved_ratio:.2f}x "
                       f"on {len(targets)} modules): {recipe.description}",
        "rules": [_rule_for(t.name, prefix, cands[j]) for t, j in zip(targets, picks, strict=True)],
        "search": None,
        "searched": record,
    })


# -- the losses ----------------------------------------------------------------------------------
def fidelity_loss(model: nn.Module, batches: list[dict]) -> tuple[LossFn, bool]:
    """Distance of a modified model from `model` as it is now, on `batches`: KL(reference || model) for
    models with a head, 1 - cosine of mean-pooled hidden states for encoders (averaged over examples)."""
    from .tasks.fidelity import model_outputs

    with torch.no_grad():
        outputs = [model_outputs(model, b) for b in batches]
    references, head = [o for o, _ in outputs], outputs[0][1]
    count = sum(len(r) for r in references)

    def loss(modified: nn.Module) -> float:
        total = 0.0
        for b, want in zip(batches, references, strict=True):
            got, _ = model_outputs(modified, b)
            if head:
                total += float(torch.nn.functional.kl_div(got.log_softmax(-1), want.log_softmax(-1),
                                                          log_target=True, reduction="sum"))
            else:
                total += float((1 - torch.nn.functional.cosine_similarity(got, want)).sum())
        return total / count

    return loss, head


def _what(head: bool) -> str:
    return "KL to the dense model's outputs" if head else "1 - cosine to the dense model's mean-pooled hidden states"


def fidelity_search(model: nn.Module, model_dir, recipe: Recipe, progress: ProgressFn | None = None) -> Recipe:
    """Search without a task: sensitivity is fidelity to the dense model on built-in sample sentences."""
    from .tasks.fidelity import sample_texts, text_batch

    texts = sample_texts()[: recipe.search.calibration]
    loss, head = fidelity_loss(model, [text_batch(model_dir, texts, max_length=recipe.training.max_length)])
    return run_search(model, recipe, loss, f"{_what(head)} on {len(texts)} built-in sample sentences", progress)


def task_search(model: nn.Module, model_dir, recipe: Recipe, task, progress: ProgressFn | None = None,
                limit: int | None = None, batch_size: int = 32) -> Recipe:
    """Search with a task: sensitivity is fidelity to the dense (fine-tuned) model on a seeded subset of the
    task's training split (its inputs only: labels play no part), `calibration` examples or `limit` if fewer."""
    count = min(recipe.search.calibration, limit) if limit is not None else recipe.search.calibration
    features = task.features("train", model_dir, limit=count, max_length=recipe.training.max_length)
    collate = task.collator(model_dir)
    batches = [collate([{k: v for k, v in f.items() if k != "labels"} for f in features[i:i + batch_size]])
               for i in range(0, len(features), batch_size)]
    loss, head = fidelity_loss(model, batches)
    return run_search(model, recipe, loss, f"{_what(head)} on {len(features)} {task.dataset} training examples",
                      progress)
