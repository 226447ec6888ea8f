"""GPTQ (Frantar et al., 2023): post-training rounding that compensates each column's rounding error in the
columns not yet rounded, from the layer's inputs on a calibration set.

For a linear layer y = W x the rounding error of a row w is measured on the calibration inputs X as
|| (w - q) X ||^2, whose Hessian is H = 2 X X^T. Columns are rounded one at a time, in order; the error of
column i, divided by [H^-1]_ii, is spread over the remaining columns along row i of the Cholesky factor of
H^-1, so later columns absorb what earlier ones lost. Transformer blocks are rounded in the order the model
uses them, each measured on the outputs of the blocks already rounded.

Served codecs (the grid is the codec's own, so the result is stored exactly):
- int-N, symmetric, zero-preserving, any group size: every group's scale is fixed before any column is
  rounded, from the original weights: the clip of the group's |w| max (100% down to 52%) that rounds them with
  the least squared error, rounded to the scale's storage dtype (columns are then rounded in "act order").
- N:M with such int-N values: one value group at a time, its kept positions are chosen from the weights as
  updated so far by SparseGPT's saliency w^2 / [H^-1]_jj (the N most salient of each M), then its scale from
  the kept values; a pruned weight's error is compensated like a rounding error. A value group must cover
  whole N:M groups.
Layers without inputs to measure (embedding tables) get the best clip per group and round to nearest on it
(`round_clipped`); other codecs keep the codec's own round-to-nearest."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from zoo.formats.codecs.base import DTYPES
from zoo.formats.codecs.intn import IntSpec
from zoo.formats.codecs.nm import NMSpec, select
from zoo.formats.manifest import BLOCK_PATTERN
from zoo.formats.spec import CodecSpec

CLIPS = [1.0 - 0.02 * i for i in range(25)]


@dataclass(frozen=True)
class Rounded:
    weight: torch.Tensor  # float32, on the codec's grid: what it decodes to
    scale: torch.Tensor  # the (value) codec's group scales, as stored


def serves(spec: CodecSpec, shape: tuple[int, ...]) -> bool:
    """Whether GPTQ rounds a 2-D weight of `shape` for this codec (else the codec's own rounding applies)."""
    if len(shape) != 2:
        return False
    values = spec.values if isinstance(spec, NMSpec) else spec
    if not (isinstance(values, IntSpec) and values.symmetric and values.zero_preserving):
        return False
    if isinstance(spec, NMSpec):
        kept = shape[1] // spec.m * spec.n
        group = values.group_size or kept
        return shape[1] % spec.m == 0 and min(group, kept) % spec.n == 0
    return True


def _int_values(spec: CodecSpec) -> IntSpec:
    """The int-N codec GPTQ rounds `spec`'s values with: `spec` itself, or an N:M codec's value codec (callers
    round only what `serves` accepts)."""
    values = spec.values if isinstance(spec, NMSpec) else spec
    if not isinstance(values, IntSpec):
        raise TypeError(f"GPTQ rounds int-N values, not {values.codec} (see `serves`)")
    return values


def _scale(block: torch.Tensor, q: int, dtype_name: str) -> torch.Tensor:
    """Per row of `block` (rows, cols; pruned entries zero): the stored scale whose clip rounds it best."""
    amax = block.abs().amax(dim=1, keepdim=True)

    def candidate(clip: float) -> tuple[torch.Tensor, torch.Tensor]:  # the stored scale, and its error per row
        s = (amax * clip / q).to(DTYPES[dtype_name]).to(block.dtype)
        safe = torch.where(s == 0, torch.ones_like(s), s)
        return s, ((torch.round(block / safe).clamp(-q, q) * s - block) ** 2).sum(dim=1, keepdim=True)

    best, err = candidate(CLIPS[0])
    for clip in CLIPS[1:]:
        s, e = candidate(clip)
        better = e < err
        best, err = torch.where(better, s, best), torch.where(better, e, err)
    return best


def _inverse_factor(h: torch.Tensor, damp: float) -> torch.Tensor | None:
    """Upper Cholesky factor of H^-1 (dampened), or None when H stays singular."""
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0  # a column no calibration input reaches: rounded to nearest, nothing to compensate
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    mean = torch.mean(torch.diag(h))
    for attempt in range(4):
        try:
            lower = torch.linalg.cholesky(h + damp * (10**attempt) * mean * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
        except torch.linalg.LinAlgError:
            continue
    return None


@contextmanager
def _one_thread():
    """The column loop is thousands of small operations: on one thread they take seconds, while OpenMP's
    threads waiting on each other (worst when the cores are busy) took minutes here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_thread()
def round_weight(
    weight: torch.Tensor, hessian: torch.Tensor, spec: CodecSpec, damp: float = 0.01, block: int = 128
) -> Rounded | None:
    """GPTQ-round a (rows, cols) weight for `spec` given H = 2 X X^T of its inputs; None if H is unusable.

    int-N: columns are rounded in decreasing order of H's diagonal (the inputs with the most energy first,
    GPTQ's "act order"), `block` at a time with the updates to later columns applied once per block; each
    group's scale is fixed first, from the original weights, so the stored groups stay contiguous.
    N:M: columns in order, one value group at a time; at its start the group's kept positions are chosen from
    the weights as updated so far, by SparseGPT's saliency w^2 / [H^-1]_jj (the N most salient of each M),
    then its scale from the kept values."""
    if isinstance(spec, NMSpec):
        return _round_sparse(weight, hessian, spec, damp)
    values = _int_values(spec)
    q = (1 << (values.bits - 1)) - 1
    rows, cols = weight.shape
    w = weight.detach().to(torch.float64)
    group = torch.arange(cols) // min(values.group_size or cols, cols)
    scale = torch.cat([_scale(w[:, group == g], q, values.scale_dtype) for g in range(int(group.max()) + 1)], dim=1)
    order = torch.argsort(torch.diag(hessian), descending=True, stable=True)
    factor = _inverse_factor(hessian.to(torch.float64)[order][:, order], damp)
    if factor is None:
        return None
    col_scale = scale[:, group[order]]
    out = _compensated(w[:, order].clone(), factor, col_scale, torch.ones(rows, cols, dtype=torch.bool), q, block)
    restored = torch.empty_like(out)
    restored[:, order] = out
    return Rounded(weight=restored.to(torch.float32), scale=scale.to(DTYPES[values.scale_dtype]))


def _value_group_width(spec: NMSpec, cols: int) -> int:
    """The weight columns one value group of an N:M codec covers (whole N:M groups, see `serves`)."""
    kept = cols // spec.m * spec.n
    return min(_int_values(spec).group_size or kept, kept) // spec.n * spec.m


def _round_sparse(weight: torch.Tensor, hessian: torch.Tensor, spec: NMSpec, damp: float) -> Rounded | None:
    values = _int_values(spec)
    q = (1 << (values.bits - 1)) - 1
    rows, cols = weight.shape
    factor = _inverse_factor(hessian.to(torch.float64), damp)
    if factor is None:
        return None
    w = weight.detach().to(torch.float64).clone()
    width = _value_group_width(spec, cols)
    out = torch.zeros_like(w)
    scales = []
    for start in range(0, cols, width):
        end = min(start + width, cols)
        part = w[:, start:end]
        saliency = (part / torch.diag(factor)[start:end]) ** 2
        keep = select(saliency.float(), spec.n, spec.m)[0].view(rows, end - start)
        s = _scale(part * keep, q, values.scale_dtype)
        scales.append(s)
        cols_scale = s.expand(rows, end - start)
        tail = _compensated(
            w[:, start:].clone(), factor[start:, start:], cols_scale, keep, q, end - start, stop=end - start
        )
        out[:, start:end] = tail[:, : end - start]
        w[:, start:] = tail  # the columns after this group carry its errors
    scale = torch.cat(scales, dim=1).to(DTYPES[values.scale_dtype])
    return Rounded(weight=out.to(torch.float32), scale=scale)


def _compensated(
    w: torch.Tensor,
    factor: torch.Tensor,
    col_scale: torch.Tensor,
    keep: torch.Tensor,
    q: int,
    block: int,
    stop: int | None = None,
) -> torch.Tensor:
    """Round the first `stop` columns of w (all by default) in order, each onto q-level grid of its column
    scale (or to zero where `keep` is false), spreading each error over the later columns through the upper
    Cholesky factor of H^-1. Returns the rounded columns, followed by the later ones as updated."""
    rows, cols = w.shape
    stop = cols if stop is None else stop
    safe = torch.where(col_scale == 0, torch.ones_like(col_scale), col_scale)
    for start in range(0, stop, block):
        end = min(start + block, stop)
        part, errors = w[:, start:end].clone(), torch.zeros(rows, end - start, dtype=w.dtype)
        inv = factor[start:end, start:end]
        for i in range(end - start):
            c = start + i
            rounded = torch.where(keep[:, c], torch.round(part[:, i] / safe[:, c]).clamp(-q, q) * col_scale[:, c], 0.0)
            err = (part[:, i] - rounded) / inv[i, i]
            part[:, i:] -= err.unsqueeze(1) * inv[i, i:].unsqueeze(0)
            part[:, i] = rounded
            errors[:, i] = err
        w[:, start:end] = part
        w[:, end:] -= errors @ factor[start:end, end:]
    return w


def round_clipped(weight: torch.Tensor, spec: CodecSpec, rows: int = 2048) -> Rounded:
    """Round to nearest on the grid of the best clip per group (the scale search of `round_weight`, without
    inputs to compensate errors with): for layers GPTQ cannot measure, such as embedding tables. N:M keeps
    the codec's own positions (the N largest |w| of each M). Rows never affect each other, so a large table
    is rounded `rows` at a time (its float64 copies stay small)."""
    values = _int_values(spec)
    q = (1 << (values.bits - 1)) - 1
    out, scales = [], []
    for start in range(0, weight.shape[0], rows):
        w = weight[start : start + rows].detach().to(torch.float64)
        keep = torch.ones_like(w, dtype=torch.bool)
        if isinstance(spec, NMSpec):
            keep = select(w.float(), spec.n, spec.m)[0].view(w.shape)
            width = _value_group_width(spec, w.shape[1])
        else:
            width = min(values.group_size or w.shape[1], w.shape[1])
        bounds = range(0, w.shape[1], width)
        scale = torch.cat(
            [_scale(w[:, b : b + width] * keep[:, b : b + width], q, values.scale_dtype) for b in bounds], dim=1
        )
        col = scale.repeat_interleave(width, dim=1)[:, : w.shape[1]]
        safe = torch.where(col == 0, torch.ones_like(col), col)
        out.append(torch.where(keep, torch.round(w / safe).clamp(-q, q) * col, 0.0).to(torch.float32))
        scales.append(scale.to(DTYPES[values.scale_dtype]))
    return Rounded(weight=torch.cat(out), scale=torch.cat(scales))


class _Stop(Exception):
    """Raised by the last hook of a stage: the rest of the forward pass is not needed."""


class _Hessians:
    """2 X^T X of the inputs of a stage's layers over the calibration set, padding tokens left out; a forward
    pass of the whole model stops after the stage's last layer (`stop`)."""

    def __init__(self, model: nn.Module, names: list[str], stop: bool = True):
        widths = {n: _linear(model, n).in_features for n in names}
        self.sums = {n: torch.zeros(width, width, dtype=torch.float64) for n, width in widths.items()}
        self.counts = dict.fromkeys(names, 0)
        self.last = names[-1] if stop else None
        self.mask: torch.Tensor | None = None
        self.hooks = [model.get_submodule(n).register_forward_hook(functools.partial(self._hook, n)) for n in names]

    def _hook(self, name: str, _module, inputs, _output) -> None:
        x = inputs[0]
        if self.mask is not None and x.shape[:2] == self.mask.shape:
            x = x[self.mask]
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        self.sums[name] += (2 * x.T @ x).to(torch.float64)  # one batch's sum in float32, the running sum in float64
        self.counts[name] += x.shape[0]
        if name == self.last:
            raise _Stop

    def collect(self, model: nn.Module, batches: list[dict]) -> None:
        try:
            for batch in batches:
                mask = batch.get("attention_mask")
                self.mask = mask.bool() if mask is not None else None
                try:
                    model(**batch)
                except _Stop:
                    pass
        finally:
            for hook in self.hooks:
                hook.remove()

    def run(self, block: nn.Module, cached: list[tuple[tuple, dict]], batches: list[dict]) -> None:
        """Collect by running one block alone on its cached inputs (see `_passed_on`)."""
        try:
            for (args, kwargs), batch in zip(cached, batches, strict=True):
                mask = batch.get("attention_mask")
                self.mask = mask.bool() if mask is not None else None
                block(*args, **kwargs)
        finally:
            for hook in self.hooks:
                hook.remove()

    def mean(self, name: str) -> torch.Tensor:
        return self.sums[name] / max(self.counts[name], 1)


def _linear(model: nn.Module, name: str) -> nn.Linear:
    """The linear layer `name` of `model` (GPTQ rounds only those: see `gptq`'s targets)."""
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"GPTQ rounds linear layers; {name} is a {type(layer).__name__}")
    return layer


_BLOCK = re.compile(rf"^(.*?{BLOCK_PATTERN})")  # a module's block: everything up to its layer index


def _stages(model: nn.Module, names: list[str], batch: dict) -> list[list[str]]:
    """`names` in the order the model calls them, grouped by transformer block: a block's layers are measured
    together, on the outputs of the blocks before it, already rounded (one pass over the calibration set per
    block; rounding inside a block one layer after another cost 3x the time for no measurable gain)."""
    calls: list[str] = []
    hooks = [model.get_submodule(n).register_forward_hook(lambda *_, n=n: calls.append(n)) for n in names]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    stages: dict[str, list[str]] = {}
    for name in calls:
        block = _BLOCK.match(name)
        stage = stages.setdefault(block.group(1) if block else name, [])
        if name not in stage:
            stage.append(name)
    return list(stages.values())


@torch.no_grad()
def gptq(
    model: nn.Module,
    plan: dict[str, CodecSpec],
    batches: list[dict],
    *,
    damp: float = 0.01,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Rounded]:
    """Round the planned linear layers of `model` (module path -> codec) with GPTQ on `batches` (tokenized
    calibration inputs with an attention mask). The model's weights are replaced by the rounded ones as it
    goes (later layers are measured on rounded earlier ones); returns what each layer stores."""
    model.eval()
    targets = [
        n
        for n, spec in plan.items()
        if isinstance(found := model.get_submodule(n), nn.Linear) and serves(spec, tuple(found.weight.shape))
    ]
    if not targets:
        return {}
    out: dict[str, Rounded] = {}
    done = 0
    cache: tuple[str, list[tuple[tuple, dict]]] | None = None  # a block, and per batch its inputs
    trusted: bool | None = None  # chaining blocks: not checked yet / checked / refused
    for stage in _stages(model, targets, batches[0]):
        block = _block_of(stage[0])
        block_inputs: list[tuple[tuple, dict]] | None
        if cache is not None and cache[0] == block and trusted is None:
            trusted = _inputs_match(model, cache[0], batches[0], cache[1][0])
        if cache is not None and cache[0] == block and trusted:  # chained: this block's inputs are cached
            inputs = _Hessians(model, stage, stop=False)
            inputs.run(model.get_submodule(cache[0]), cache[1], batches)
            block_inputs = cache[1]
        else:
            inputs = _Hessians(model, stage)
            block_inputs = _collect_capturing(model, block, inputs, batches)
        for name in stage:
            layer = _linear(model, name)
            rounded = round_weight(layer.weight, inputs.mean(name), plan[name], damp)
            if rounded is not None:
                layer.weight.copy_(rounded.weight.to(layer.weight.dtype))
                out[name] = Rounded(weight=layer.weight.detach(), scale=rounded.scale)  # no second copy
            done += 1
            if progress is not None:
                progress(done, len(targets))
        cache = None
        following = _next_block(block)
        # a cache object a block appends to cannot be replayed
        if (
            block is not None
            and following is not None
            and block_inputs is not None
            and all(_plain(v) for a, k in block_inputs for v in (*a, *k.values()))
            and trusted is not False
        ):
            module = model.get_submodule(block)  # what the rounded block passes on: the next block's inputs
            passed = [_passed_on(args, kwargs, module(*args, **kwargs)) for args, kwargs in block_inputs]
            kept = [p for p in passed if p is not None]
            if len(kept) == len(passed):
                cache = (following, kept)
    return out


# Chaining blocks. A stage is a transformer block; it is measured on the outputs of the blocks before it, already
# rounded. Running the whole model up to each block costs L(L+1)/2 block passes for L blocks (78 on BERT-base);
# instead each block's inputs are kept per calibration batch, and its (rounded) outputs become the next block's
# inputs: 2 passes per block. That holds when consecutive blocks take the same arguments but the hidden states
# (BERT, RoBERTa, ViT encoders); it is checked once, on the first chained block, against every argument the
# whole model gives it, and where it does not hold (T5 passes a position bias from block 0 on; a decoder block
# appends to a cache) every stage runs the whole model as before.


def _block_of(name: str) -> str | None:
    found = _BLOCK.match(name)
    return found.group(1).rstrip(".") if found else None


def _next_block(block: str | None) -> str | None:
    found = re.match(r"^(.*\.)(\d+)$", block or "")
    return f"{found.group(1)}{int(found.group(2)) + 1}" if found else None


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor | None:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    found = kwargs.get("hidden_states")
    return found if isinstance(found, torch.Tensor) else None


def _passed_on(args: tuple, kwargs: dict, output) -> tuple[tuple, dict] | None:
    """The next block's (args, kwargs): these, with the hidden states replaced by this block's output."""
    hidden = output if isinstance(output, torch.Tensor) else output[0] if isinstance(output, tuple) and output else None
    if not isinstance(hidden, torch.Tensor) or _hidden(args, kwargs) is None:
        return None
    if args and isinstance(args[0], torch.Tensor):
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _plain(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))


def _collect_capturing(
    model: nn.Module, block: str | None, inputs: _Hessians, batches: list[dict]
) -> list[tuple[tuple, dict]] | None:
    """Run the whole model for `inputs`, keeping what `block` is called with for each batch."""
    if block is None:
        inputs.collect(model, batches)
        return None
    seen: list[tuple[tuple, dict]] = []
    hook = model.get_submodule(block).register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True
    )
    try:
        inputs.collect(model, batches)
    finally:
        hook.remove()
    return seen if len(seen) == len(batches) else None


def _inputs_match(model: nn.Module, block: str, batch: dict, chained: tuple[tuple, dict]) -> bool:
    """Does the whole model call `block` with exactly what chaining gives it (first batch): the hidden states
    and every other argument (T5's later blocks take the position bias block 0 computed)?"""
    seen: list[tuple[tuple, dict]] = []

    def hook(_m, args, kwargs):
        seen.append((args, kwargs))
        raise _Stop

    handle = model.get_submodule(block).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(**batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    return (
        bool(seen)
        and _same(seen[0][0], chained[0])
        and seen[0][1].keys() == chained[1].keys()
        and all(_same(seen[0][1][k], chained[1][k]) for k in chained[1])
    )


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)
        )
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (
            isinstance(a, (tuple, list))
            and isinstance(b, (tuple, list))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b
