"""Ratio-budget search (NxMiFormer): per-layer settings that meet a compression ratio with the least loss.

1. Candidates: every `bits` x `patterns` of the recipe's `search:` section, as codecs (int-N, zero-preserving,
   symmetric, group `group_size`; N:M patterns store their kept values with that int-N codec).
2. Sensitivity: for each searched module and candidate, the module's weight is replaced by what the codec
   stores (decode(encode(w)), exactly what the checkpoint would hold), one module at a time, and its
   distance from the unmodified model is measured on a small calibration set: KL of the output
   distributions (models with a head) or 1 - cosine of mean-pooled hidden states (encoders), on task
   training examples with --task, else on built-in sample sentences. A distance to the dense model is never
   negative, so unlike a labelled loss it cannot credit a setting with noise that happens to help.
   The recipe's `measure` says how: `model` computes that distance for every pair (blocks before the module's
   replayed from the dense pass); `block` (the default) runs only the module's transformer block, on its
   inputs cached from the dense pass, scores its output's squared error against the dense block's, and puts
   those errors into loss units with three of the module's settings measured end to end (modules outside
   every block, embeddings and pooler, end to end). See `measure`.
3. Choice: a multiple-choice knapsack solved exactly by dynamic programming over bytes: one candidate per
   module, least summed loss increase, within the budget of the whole checkpoint: the dense source's weight
   files / target ratio, less what the search does not decide (every other tensor as it will be stored:
   norms, biases and heads at the recipe's dense dtype, plus an allowance for the safetensors headers).
   Embeddings and the pooler are items of the knapsack like any layer when the recipe's rules select them.
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

from zoo.formats import codecs
from zoo.formats.spec import CodecSpec, IntSpec, NMSpec

from .architecture import layer_kind
from .errors import CodecError, RecipeError
from .recipes import Recipe, Rule
from .recipes.search import SearchChoice, SearchRecord, SearchSpec
from .tasks.text import DEFAULT_MAX_LENGTH

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
    shape: tuple[int, ...]
    kind: str = "linear"


# Bytes allowed per stored tensor for its entry in a safetensors header (name, dtype, shape, offsets):
# MiniLM's entries average under 100 bytes, so the budget errs on the safe side.
HEADER_ALLOWANCE = 160


@dataclass(frozen=True)
class Budget:
    """What the searched modules may store: the whole checkpoint's share left by everything else."""

    reference_nbytes: int  # the dense checkpoint's weight files, which the target ratio divides
    fixed_nbytes: int  # every tensor the search does not decide, as it will be stored, with header allowances
    target_ratio: float

    @property
    def nbytes(self) -> int:
        return int(self.reference_nbytes / self.target_ratio) - self.fixed_nbytes

    def ratio(self, searched_nbytes: float) -> float:
        """The whole-checkpoint ratio the searched modules reach at `searched_nbytes`."""
        return self.reference_nbytes / (self.fixed_nbytes + searched_nbytes)


def searched_modules(model: nn.Module, recipe: Recipe) -> list[Target]:
    """The modules of `model` the recipe's rules select (the ones the search decides); a module whose
    weight the model ties to an earlier one is stored with it, so only the first of a tied group counts."""
    from zoo.loaders.naming import tied_groups

    copies = {member for members in tied_groups(model).values() for member in members}
    found = [
        Target(name, tuple(module.weight.shape), kind)
        for name, module in model.named_modules()
        if (kind := layer_kind(module)) and name not in copies and recipe.codec_for(name, kind) is not None
    ]
    if not found:
        raise RecipeError(f"recipe {recipe.name} selects no module of the model to search")
    return found


def search_budget(model: nn.Module, model_dir, targets: list[Target], recipe: Recipe) -> Budget:
    """The byte budget of the searched modules, from the dense checkpoint in `model_dir` (its file size, and
    every tensor the search leaves to the recipe's dense dtype)."""
    from zoo.formats import SafetensorsDir
    from zoo.formats.codecs.base import DTYPES
    from zoo.loaders.naming import model_paths

    source = SafetensorsDir(model_dir)
    names = list(source.names())
    paths = model_paths(model, [n.removesuffix(".weight") for n in names if n.endswith(".weight")])
    searched = {t.name for t in targets}
    dense = recipe.dense_dtype
    fixed = 3 * HEADER_ALLOWANCE * len(targets)  # a candidate stores at most 3 tensors (N:M codes, values, scales)
    for name in names:
        if name.endswith(".weight") and paths.get(name.removesuffix(".weight")) in searched:
            continue
        recast = dense != "keep" and source.dtype(name) in DTYPES
        fixed += (source.numel(name) * DTYPES[dense].itemsize if recast else source.nbytes(name)) + HEADER_ALLOWANCE
    return Budget(reference_nbytes=source.file_nbytes(), fixed_nbytes=fixed, target_ratio=_spec(recipe).target_ratio)


def check_reachable(targets: list[Target], spec: SearchSpec, budget: Budget) -> None:
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
    smallest = sum(min(codecs.nbytes(t.shape, c) for c in cands) for t in targets)
    if smallest > budget.nbytes:
        best = budget.ratio(smallest)
        raise RecipeError(
            f"target ratio {spec.target_ratio:g}x cannot be reached: the smallest candidates for these "
            f"{len(targets)} modules give a checkpoint {best:.2f}x smaller than the dense one",
            hint=f"ask for at most {math.floor(best * 10) / 10:g}x, search more modules (embeddings, pooler), "
            "or add fewer bits / sparser patterns",
        )


MEASURES = ("block", "model")


@dataclass
class _Block:
    """A transformer block with the dense pass's inputs and output of each of its calls, one per calibration
    batch: what the block measure runs again with one of its modules changed."""

    module: nn.Module
    calls: list  # (args, kwargs, output)

    @torch.no_grad()
    def error(self, masks: list) -> float:
        """Summed squared distance of the block's output, run again on the dense inputs, from the dense output,
        over the batches' real tokens (padding plays no part in either loss)."""
        total = 0.0
        for (args, kwargs, want), mask in zip(self.calls, masks, strict=True):
            diff = _hidden(self.module(*args, **kwargs)).float() - _hidden(want).float()
            if mask is not None and diff.dim() == 3 and tuple(diff.shape[:2]) == tuple(mask.shape):
                diff = diff[mask.bool()]
            total += float(diff.double().square().sum())
        return total


def _hidden(output):
    """A block's hidden states: its output, or the first of a tuple (older transformers)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) else None


class _Record:
    """One dense pass over the calibration set, recording what the two measures reuse.

    The end-to-end (`model`) measure replays the dense model's block outputs: measuring a module in block b
    replays blocks 0..b-1 from the record instead of computing them again: their inputs and weights are the
    dense ones, so their outputs are too (eval mode, no dropout), and the loss is exactly what a full run gives.
    On average it halves the work of a search. Used only where each block runs once per batch, in order (an
    encoder's layer list; not ALBERT's shared layers, not an encoder-decoder).

    The `block` measure keeps each block's dense inputs and output for every call (`blocks_of`): a change to a
    module leaves everything before its block alone, so its block run alone on those inputs gives exactly the
    output the whole model would compute there. Only for a module that runs once per batch, in a block that runs
    once per batch, whose weight no other module shares (a tied copy elsewhere would see the change outside the
    block). Modules outside every block (embeddings, pooler) are left to the end-to-end measure."""

    def __init__(self, model: nn.Module, targets: list[Target], loss: LossFn, blocks_alone: bool):
        from zoo.loaders.structure import StructureError, layer_list

        self.blocks: list[nn.Module] = []
        self.first: dict[str, int] = {}
        self.masks: list = []
        self.blocks_of: dict[str, _Block] = {}
        try:
            list_name, blocks = layer_list(model)
        except StructureError:
            list_name, blocks = "", nn.ModuleList()
        self.outputs: list[list] = [[] for _ in blocks]
        order: list[int] = []  # block index of each block call, in order
        seen: dict[str, int] = {}
        target_calls: dict[str, int] = {t.name: 0 for t in targets}
        home: dict[str, int] = {}  # target -> index of the block holding it
        if blocks_alone:
            for t in targets:
                index = next((i for i in range(len(blocks)) if t.name.startswith(f"{list_name}.{i}.")), None)
                if index is not None:
                    home[t.name] = index
        calls: dict[int, list] = {i: [] for i in set(home.values())}

        def record(index):
            def hook(module, args, output):
                self.outputs[index].append(output)
                order.append(index)

            return hook

        def first_call(name):
            def hook(module, args):
                seen.setdefault(name, len(order))
                target_calls[name] += 1

            return hook

        def block_call(index):
            def hook(module, args, kwargs, output):
                calls[index].append((args, kwargs, output))

            return hook

        def model_call(module, args, kwargs):
            self.masks.append(kwargs.get("attention_mask"))

        handles = [b.register_forward_hook(record(i)) for i, b in enumerate(blocks)]
        handles += [model.get_submodule(t.name).register_forward_pre_hook(first_call(t.name)) for t in targets]
        handles += [blocks[i].register_forward_hook(block_call(i), with_kwargs=True) for i in calls]
        handles.append(model.register_forward_pre_hook(model_call, with_kwargs=True))
        try:
            self.base = loss(model)
        finally:
            for h in handles:
                h.remove()
        n = len(self.outputs[0]) if blocks else 0
        if blocks and all(len(o) == n for o in self.outputs) and order[: len(blocks)] == list(range(len(blocks))):
            self.blocks = list(blocks)
            # blocks already done when a target first runs, in the first batch: those a change to it leaves alone
            self.first = {name: min(count, len(blocks)) for name, count in seen.items()}
        else:
            self.outputs = []
        batches = len(self.masks)
        for name, index in home.items():
            weight = model.get_submodule(name).weight
            shared = sum(1 for m in model.modules() if getattr(m, "weight", None) is weight) > 1
            recorded = calls[index]
            if (
                batches
                and not shared
                and target_calls[name] == batches
                and len(recorded) == batches
                and all(_hidden(out) is not None for _, _, out in recorded)
            ):
                self.blocks_of[name] = _Block(blocks[index], recorded)

    def loss(self, model: nn.Module, loss: LossFn, target: str) -> float:
        """loss(model) with the blocks before `target`'s replayed from the record."""
        skip = self.first.get(target, 0) if self.blocks else 0
        if skip == 0:
            return loss(model)
        for block, outputs in zip(self.blocks[:skip], self.outputs[:skip], strict=True):
            block.forward = _replayer(iter(outputs))
        try:
            return loss(model)
        finally:
            for block in self.blocks[:skip]:
                del block.forward  # the class's forward again


def _replayer(outputs):
    def forward(*args, **kwargs):
        return next(outputs)

    return forward


CALIBRATIONS = 3  # settings per module measured end to end by the block measure


def _calibrations(errors: np.ndarray) -> list[int]:
    """The settings of a module measured end to end to put its block errors into loss units: the quartiles (by
    block error) of those that change its block's output at all. One point (the median) ranked MiniLM's choices
    well with the encoder's cosine loss but not with a classifier's KL, whose loss grows faster than the block
    error at small errors than at large ones; three points follow that curve."""
    changed = np.flatnonzero(errors > 0)
    order = changed[np.argsort(errors[changed], kind="stable")]
    return sorted(
        {int(order[len(order) * q // (CALIBRATIONS + 1)]) for q in range(1, CALIBRATIONS + 1)} if len(order) else set(),
        key=lambda k: errors[k],
    )


def _estimate(errors: np.ndarray, measured: dict[int, float]) -> np.ndarray:
    """Loss increases from block errors: the measured ones where measured, between them log-log linear in the
    block error, beyond them proportional to it from the nearest measured point. A measured increase <= 0 (the
    loss does not see the module, or float noise) is no increase, and no point to scale from."""
    out = np.zeros(len(errors))
    points = sorted((errors[k], v) for k, v in measured.items() if v > 0)
    if points:
        x, y = np.log([e for e, _ in points]), np.log([v for _, v in points])
        changed = errors > 0
        at = np.log(errors[changed])
        est = np.interp(at, x, y)
        est = np.where(at < x[0], y[0] + at - x[0], est)
        est = np.where(at > x[-1], y[-1] + at - x[-1], est)
        out[changed] = np.exp(est)
    for k, v in measured.items():
        out[k] = max(v, 0.0)
    return out


def _parameter(model: nn.Module, name: str) -> nn.Parameter:
    """The weight Parameter of a searched module (a linear, embedding or convolution layer)."""
    weight = model.get_submodule(name).weight
    if not isinstance(weight, nn.Parameter):
        raise TypeError(f"{name}.weight is a {type(weight).__name__}, not a Parameter")
    return weight


def _spec(recipe: Recipe) -> SearchSpec:
    """The recipe's `search:` section; a recipe without one is not a search."""
    if recipe.search is None:
        raise RecipeError(f"recipe {recipe.name} has no search: section", hint="zoo recipes search shows one")
    return recipe.search


def _store(weight: nn.Parameter, original: torch.Tensor, codec: CodecSpec) -> None:
    """`weight` as `codec` stores `original`: decode(encode(w)), exactly what the checkpoint would hold."""
    weight.copy_(codecs.decode(codecs.encode(original.float(), codec), codec, original.shape).to(weight.dtype))


@torch.no_grad()
def measure(
    model: nn.Module,
    targets: list[Target],
    cands: list[CodecSpec],
    loss: LossFn,
    progress: ProgressFn | None = None,
    how: str = "block",
) -> tuple[float, np.ndarray]:
    """Base loss, and the loss increase of each (module, candidate) with only that module changed.

    how="model": every pair's loss, end to end (blocks before the module's replayed from the dense pass).
    how="block": each pair's squared error of the module's block output (the block alone, on the dense pass's
    inputs to it, against its dense output), put into loss units by end-to-end measurements of three of the
    module's settings (`_calibrations`, `_estimate`): there the estimate is the measured loss increase, and the
    module's other settings keep the block's ranking. Modules outside every block, any the block cannot isolate
    (see _Record), and those whose end-to-end losses cost no more than that (the last block's: one block and
    the loss each) are measured end to end."""
    if how not in MEASURES:
        raise ValueError(f"unknown search measure {how!r}: one of {', '.join(MEASURES)}")
    model.eval()
    record = _Record(model, targets, loss, blocks_alone=how == "block")
    base = record.base
    increase = np.zeros((len(targets), len(cands)))
    total, done = len(targets) * len(cands), 0

    def tick():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for i, t in enumerate(targets):
        weight = _parameter(model, t.name)
        original = weight.detach().clone()
        block = record.blocks_of.get(t.name)
        if block is not None and record.blocks:  # end to end where that is no dearer: the last block
            replayed = len(record.blocks) - record.first.get(t.name, 0)  # blocks an end-to-end loss runs
            if len(cands) * replayed <= len(cands) + min(CALIBRATIONS, len(cands)) * replayed:
                block = None
        try:
            if block is None:
                for j, c in enumerate(cands):
                    _store(weight, original, c)
                    increase[i, j] = record.loss(model, loss, t.name) - base
                    tick()
                continue
            errors = np.zeros(len(cands))
            for j, c in enumerate(cands):
                _store(weight, original, c)
                errors[j] = block.error(record.masks)
                if j < len(cands) - 1:
                    tick()
            measured = {}  # none when no setting changes the block's output, nor then the model's: no increase
            for k in _calibrations(errors):
                _store(weight, original, cands[k])
                measured[k] = record.loss(model, loss, t.name) - base
            increase[i] = _estimate(errors, measured)
            tick()
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


_HOW = {
    "block": "measure: block (each module's block run alone on the dense inputs, its output error put into loss "
    "units by three of its settings measured end to end; embeddings and pooler end to end)",
    "model": "measure: model (every module and setting end to end)",
}


def _rule_for(target: Target, prefix: str, codec: CodecSpec) -> Rule:
    """A rule for exactly this module, whether the checkpoint names it with the model's prefix or without."""
    short = target.name.removeprefix(prefix + ".") if prefix else target.name
    return Rule(targets=[rf"(^|\.){re.escape(short)}$"], kinds=[target.kind], codec=codec)


def run_search(
    model: nn.Module, model_dir, recipe: Recipe, loss: LossFn, measure_text: str, progress: ProgressFn | None = None
) -> Recipe:
    """The concrete recipe the search picks for `model` (eval mode, the dense reference), whose dense
    checkpoint is `model_dir` (the whole-checkpoint budget is counted against its files)."""
    spec = _spec(recipe)
    targets = searched_modules(model, recipe)
    budget = search_budget(model, model_dir, targets, recipe)
    check_reachable(targets, spec, budget)
    cands = candidates(spec)
    _base, increase = measure(model, targets, cands, loss, progress, how=spec.measure)
    costs = np.array([[codecs.nbytes(t.shape, c) for c in cands] for t in targets], dtype=np.float64)
    picks = choose(costs, increase, budget.nbytes)
    stored = int(sum(costs[i, j] for i, j in enumerate(picks)))
    prefix = getattr(model, "base_model_prefix", "") or ""
    record = SearchRecord(
        target_ratio=spec.target_ratio,
        achieved_ratio=round(budget.ratio(stored), 4),
        estimated_nbytes=budget.fixed_nbytes + stored,
        measure=f"{measure_text}; {_HOW[spec.measure]}",
        candidates=[c.describe() for c in cands],
        total_loss_increase=round(float(sum(increase[i, j] for i, j in enumerate(picks))), 6),
        modules={
            t.name.removeprefix(prefix + ".") if prefix else t.name: SearchChoice(
                codec=cands[j].describe(), nbytes=int(costs[i, j]), loss_increase=round(float(increase[i, j]), 6)
            )
            for i, (t, j) in enumerate(zip(targets, picks, strict=True))
        },
    )
    return recipe.model_copy(
        update={
            "description": f"per-layer search (target {spec.target_ratio:g}x, reached {record.achieved_ratio:.2f}x "
            f"on {len(targets)} modules): {recipe.description}",
            "rules": [_rule_for(t, prefix, cands[j]) for t, j in zip(targets, picks, strict=True)],
            "search": None,
            "searched": record,
        }
    )


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
                total += float(
                    torch.nn.functional.kl_div(
                        got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="sum"
                    )
                )
            else:
                total += float((1 - torch.nn.functional.cosine_similarity(got, want)).sum())
        return total / count

    return loss, head


def _what(head: bool) -> str:
    return "KL to the dense model's outputs" if head else "1 - cosine to the dense model's mean-pooled hidden states"


def fidelity_search(
    model: nn.Module, model_dir, recipe: Recipe, progress: ProgressFn | None = None, calibration=None
) -> Recipe:
    """Search without a task: sensitivity is fidelity to the dense model on calibration text (the built-in
    sample sentences, or `calibration`: a text file or a data directory's train split)."""
    from .tasks.fidelity import calibration_texts, text_batch

    texts, described = calibration_texts(calibration, _spec(recipe).calibration)
    batches = [
        text_batch(model_dir, texts[i : i + 32], max_length=recipe.training.max_length or DEFAULT_MAX_LENGTH)
        for i in range(0, len(texts), 32)
    ]
    loss, head = fidelity_loss(model, batches)
    return run_search(model, model_dir, recipe, loss, f"{_what(head)} on {described}", progress)


def task_search(
    model: nn.Module,
    model_dir,
    recipe: Recipe,
    task,
    progress: ProgressFn | None = None,
    limit: int | None = None,
    batch_size: int = 32,
) -> Recipe:
    """Search with a task: sensitivity is fidelity to the dense (fine-tuned) model on a seeded subset of the
    task's training split (its inputs only: labels play no part), `calibration` examples or `limit` if fewer."""
    spec = _spec(recipe)
    count = min(spec.calibration, limit) if limit is not None else spec.calibration
    features = task.features(
        "train", model_dir, limit=count, max_length=recipe.training.max_length or DEFAULT_MAX_LENGTH
    )
    collate = task.collator(model_dir)
    batches = [
        collate([{k: v for k, v in f.items() if k != "labels"} for f in features[i : i + batch_size]])
        for i in range(0, len(features), batch_size)
    ]
    loss, head = fidelity_loss(model, batches)
    return run_search(
        model, model_dir, recipe, loss, f"{_what(head)} on {len(features)} {task.dataset} training examples", progress
    )
