"""Block movement pruning of attention heads and FFN neurons (see zoo/recipes/pruning.py).

Each block has a gate: the output projection's columns of a head, and the FFN output layer's
columns of a block of neurons, are multiplied by it (a parametrization, composed with any codec's
fake quantizer). A closed gate makes the block contribute exactly nothing, so removing it after
training (loaders.structure.resize) changes no output. The gates are 0/1 buffers that require
grad: their gradient is the movement score's step (dL/dgate = sum over the block of dL/dW' * W),
accumulated after every backward pass and cleared."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers import TrainerCallback

from zoo.formats import Structure
from zoo.loaders.structure import StructureError, head_count, head_size, layer_list, layer_parts, resize

from .. import distributed
from ..errors import RecipeError
from ..recipes.pruning import PruningSpec


class ColumnGate(nn.Module):
    """w * gate, each gate value repeated over `block` consecutive input columns."""

    gate: torch.Tensor  # a buffer: 0/1 per block, requiring grad (its gradient is the movement score's step)

    def __init__(self, units: int, block: int):
        super().__init__()
        self.block = block
        self.register_buffer("gate", torch.ones(units, requires_grad=True))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.gate.repeat_interleave(self.block).to(w.dtype)

    def _apply(self, fn, recurse=True):
        # Module.to() replaces a buffer by fn(buffer): where that copies (to CUDA; to "cpu:0", as Trainer does
        # under a launcher) the copy of a tensor that requires grad is not a leaf, so its .grad would stay None
        # and the movement scores would never move. The gate stays a leaf.
        super()._apply(fn, recurse)
        if not self.gate.is_leaf:
            self.gate = self.gate.detach().requires_grad_(True)
        return self


@dataclass(frozen=True)
class _Layer:
    heads: int
    head_size: int
    width: int


def _layers(model: nn.Module, spec: PruningSpec) -> list[_Layer]:
    try:
        _, layers = layer_list(model)
        out = []
        for i, layer in enumerate(layers):
            parts = layer_parts(layer)
            attention = layer.get_submodule(parts.attention)
            ffn_in = layer.get_submodule(parts.ffn_in)
            assert isinstance(ffn_in, nn.Linear)  # layer_parts names nn.Linear modules only
            width = ffn_in.out_features
            if width % spec.ffn_block:
                raise RecipeError(
                    f"pruning block of {spec.ffn_block} FFN neurons does not tile layer {i}'s FFN width {width}",
                    hint=f"choose an ffn_block that divides {width} (e.g. {math.gcd(width, 32)})",
                )
            out.append(_Layer(head_count(attention), head_size(attention), width))
        return out
    except StructureError as exc:
        raise RecipeError(f"cannot prune {type(model).__name__}: {exc}", hint=exc.hint) from None


def check_pruning(model: nn.Module, spec: PruningSpec, plan: Collection[str] | None = None) -> list[_Layer]:
    """Fail before any training if the model's layers cannot be pruned as `spec` asks (meta model is fine);
    the layers' shapes otherwise. `plan`: the modules the recipe's codecs compress, which must lie outside
    the pruned layers."""
    layers = _layers(model, spec)
    name, _ = layer_list(model)
    inside = sorted(m for m in plan or {} if m.startswith(name + "."))
    if inside:
        raise RecipeError(
            f"pruning resizes the transformer layers, so their linears cannot also get codecs ({inside[0]}...)",
            hint="limit the recipe's rules to modules outside the layers (embeddings, pooler)",
        )
    for kind, share, units in (
        ("heads", spec.heads, [x.heads for x in layers]),
        ("FFN blocks", spec.ffn, [x.width // spec.ffn_block for x in layers]),
    ):
        keep = sum(units) - round(share * sum(units))
        if share and keep < len(units):
            raise RecipeError(
                f"pruning {share:.0%} of {sum(units)} {kind} leaves fewer than one per layer",
                hint="lower the share: every layer keeps at least one head and one FFN block",
            )
    return layers


def cubic(progress: float, start: float, end: float) -> float:
    """Share of the final sparsity reached at `progress` (Zhu & Gupta's cubic schedule)."""
    if progress <= start:
        return 0.0
    t = min((progress - start) / (end - start), 1.0)
    return 1.0 - (1.0 - t) ** 3


class Pruner:
    def __init__(self, model: nn.Module, spec: PruningSpec):
        self.spec = spec
        self.layers = check_pruning(
            model, spec, {n for n, m in model.named_modules() if parametrize.is_parametrized(m, "weight")}
        )
        _, modules = layer_list(model)
        self.head_gates: list[ColumnGate] = []
        self.ffn_gates: list[ColumnGate] = []
        for layer, shape in zip(modules, self.layers, strict=True):
            parts = layer_parts(layer)
            heads = ColumnGate(shape.heads, shape.head_size)
            ffn = ColumnGate(shape.width // spec.ffn_block, spec.ffn_block)
            parametrize.register_parametrization(layer.get_submodule(parts.o), "weight", heads, unsafe=True)
            parametrize.register_parametrization(layer.get_submodule(parts.ffn_out), "weight", ffn, unsafe=True)
            self.head_gates.append(heads)
            self.ffn_gates.append(ffn)
        self.scores = {
            "heads": [torch.zeros(x.heads) for x in self.layers],
            "ffn": [torch.zeros(x.width // spec.ffn_block) for x in self.layers],
        }

    def _gates(self, kind: str) -> list[ColumnGate]:
        return self.head_gates if kind == "heads" else self.ffn_gates

    @torch.no_grad()
    def accumulate(self) -> None:
        """Movement: scores fall by the gates' gradient (a block the loss wants larger scores up). Under a
        launcher the gradient is averaged over the ranks first, as DDP does for parameters (the gates are
        buffers, which DDP leaves alone): every rank then holds the scores of the whole global batch, and closes
        the same blocks."""
        gates = [g.gate for kind in ("heads", "ffn") for g in self._gates(kind) if g.gate.grad is not None]
        distributed.all_reduce_mean_([g.grad for g in gates])
        for kind in ("heads", "ffn"):
            for score, gate in zip(self.scores[kind], self._gates(kind), strict=True):
                if gate.gate.grad is not None:
                    score -= gate.gate.grad.detach().float().cpu()
                    gate.gate.grad = None

    def named_scores(self) -> dict[str, torch.Tensor]:
        """The movement scores by name (what a test compares across ranks)."""
        return {f"pruning.{kind}.{i}": s for kind, scores in self.scores.items() for i, s in enumerate(scores)}

    @torch.no_grad()
    def update(self, progress: float) -> None:
        """Close the lowest-scoring blocks, globally over layers, to the scheduled share."""
        reached = cubic(progress, *self.spec.ramp)
        for kind, share in (("heads", self.spec.heads), ("ffn", self.spec.ffn)):
            scores = self.scores[kind]
            total = sum(len(s) for s in scores)
            keep = total - round(share * reached * total)
            chosen = [torch.zeros(len(s), dtype=torch.bool) for s in scores]
            for c, s in zip(chosen, scores, strict=True):  # every layer keeps its best block
                c[int(s.argmax())] = True
            flat = torch.cat(scores).clone()
            flat[torch.cat(chosen)] = float("inf")
            order = flat.argsort(descending=True)[:keep]
            mask = torch.zeros(total, dtype=torch.bool)
            mask[order] = True
            for c, m, gate in zip(chosen, mask.split([len(s) for s in scores]), self._gates(kind), strict=True):
                gate.gate.copy_((c | m).to(gate.gate.dtype))

    def kept(self) -> list[tuple[list[int], list[int]]]:
        """Per layer: the heads and the FFN neurons whose gates are open."""
        out = []
        for heads, ffn in zip(self.head_gates, self.ffn_gates, strict=True):
            blocks = ffn.gate.detach().nonzero().flatten().tolist()
            neurons = [b * ffn.block + i for b in blocks for i in range(ffn.block)]
            out.append((heads.gate.detach().nonzero().flatten().tolist(), neurons))
        return out

    def remove(self, model: nn.Module) -> Structure:
        """After `export` (gates multiplied in): remove the closed blocks physically; the new shapes."""
        kept = self.kept()
        _, modules = layer_list(model)
        for layer, (heads, neurons) in zip(modules, kept, strict=True):
            resize(layer, heads, neurons)
        return Structure(
            attention_heads=[len(h) for h, _ in kept],
            intermediate_sizes=[len(n) for _, n in kept],
            heads_before=max(x.heads for x in self.layers),
            intermediate_size_before=max(x.width for x in self.layers),
        )


class PruningSchedule(TrainerCallback):
    """Scores after every backward pass (before the optimizer steps); masks every `interval` steps
    until the ramp ends, then fixed, so the rest of training recovers the final structure."""

    def __init__(self, pruner: Pruner):
        self.pruner = pruner
        self.final = False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self.final:
            self.pruner.accumulate()

    def on_step_begin(self, args, state, control, **kwargs):
        progress = state.global_step / max(state.max_steps, 1)
        if not self.final and (
            state.global_step % self.pruner.spec.interval == 0 or progress >= self.pruner.spec.ramp[1]
        ):
            self.pruner.update(progress)
            self.final = progress >= self.pruner.spec.ramp[1]

    def on_train_end(self, args, state, control, **kwargs):
        if not self.final:  # a run shorter than the ramp still ends at the recipe's shares
            self.pruner.accumulate()
            self.pruner.update(1.0)
            self.final = True
