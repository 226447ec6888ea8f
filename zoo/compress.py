"""Post-training compression and packing: source checkpoint -> compact zoo checkpoint.

Both run as one stream: the plan (which module gets which codec) is made from the safetensors
headers alone, then tensors are read one at a time from the memory-mapped source, encoded, and
handed to the writer, which flushes shard by shard. Peak memory stays near the largest tensor
plus one output shard, so a model larger than RAM compresses.

`compress` quantizes/prunes (round to nearest, magnitude N:M, k-means, sign/ternary thresholds);
`pack` only stores weights that already have the claimed structure and refuses the rest."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo.cards import base_card_data, write_card
from zoo.formats import (
    BaseModelInfo,
    CheckpointWriter,
    Manifest,
    ModuleEntry,
    RecipeRecord,
    SafetensorsDir,
    SizeReport,
    Structure,
    codecs,
    companion_files,
    module_entry,
    read_config,
    shard_metadata,
    tensor_name,
)
from zoo.formats.codecs.base import DTYPES
from zoo.formats.fit import check_decodes_to, fit
from zoo.formats.manifest import ModuleKind, config_digest, is_encoder_linear
from zoo.formats.memory import release_freed_memory
from zoo.formats.writer import DEFAULT_MAX_SHARD_BYTES, ensure_writable, sha256_file

from . import __version__
from .architecture import module_kinds
from .errors import CodecError, RecipeError, UnsupportedModelError
from .recipes import Recipe
from .resolve import ResolvedModel

ProgressFn = Callable[[str, int], None]
"""Called after each source tensor with its name and its size in bytes."""

WEIGHT_SUFFIX = ".weight"


@dataclass(frozen=True)
class Plan:
    kinds: dict[str, ModuleKind]  # every module with a floating-point .weight -> its kind
    modules: dict[str, ModuleEntry]  # the ones the recipe compresses
    copies: dict[str, str] = field(default_factory=dict)  # a tied module the source also stores -> its owner


@dataclass(frozen=True)
class CompressResult:
    path: Path
    manifest: Manifest
    seconds: float


def _weight_modules(source: SafetensorsDir) -> list[str]:
    return [
        name[: -len(WEIGHT_SUFFIX)]
        for name in source.names()
        if name.endswith(WEIGHT_SUFFIX) and source.dtype(name) in DTYPES
    ]


def make_plan(source: SafetensorsDir, model_dir: Path, recipe: Recipe, *, pruned: bool = False) -> Plan:
    """Decide every module's codec from the headers, failing before any tensor is read."""
    names = _weight_modules(source)
    kinds, tied = module_kinds(model_dir, names)
    modules: dict[str, ModuleEntry] = {}
    copies: dict[str, str] = {}
    problems: list[RecipeError] = []  # every module's, reported together
    for module in names:
        if module in copies:
            continue
        weight = module + WEIGHT_SUFFIX
        shape = source.shape(weight)
        partners = tied.get(module, [])
        try:
            spec = recipe.spec_for_tied(module, kinds[module], partners, shape)
        except RecipeError as exc:
            problems.append(exc)
            continue
        if spec is None:
            continue
        stored_too = [name for name, _ in partners if name in kinds]  # an older file may hold a tied copy
        copies.update({name: module for name in stored_too})
        try:
            modules[module] = module_entry(
                kinds[module],
                is_encoder_linear(module, kinds[module]),
                shape,
                source.dtype(weight),
                spec,
                tied=[name for name, _ in partners],
            )
        except CodecError as exc:
            problems.append(
                RecipeError(f"recipe {recipe.name}: module {module} {list(shape)}: {exc}", hint=exc.hint, module=module)
            )
    if problems:
        raise _all_of(recipe.name, problems)
    if not modules and not pruned and "linear" not in kinds.values():
        arch = (read_config(model_dir).get("architectures") or ["this model"])[0]
        raise UnsupportedModelError(
            f"{arch} is not an architecture zoo serves: it has no nn.Linear layer for a recipe to compress "
            f"(its weights are in {', '.join(sorted(set(kinds.values())))} modules only)",
            hint="README's Supported architectures lists the families zoo is tested on",
        )
    if not modules and not pruned:  # a pruned model may keep every layer dense
        examples = ", ".join(_examples(kinds))
        raise RecipeError(
            f"recipe {recipe.name} matches no module of {model_dir}; its modules are named like {examples}",
            hint="compare the recipe's targets (regular expressions) and kinds with those names",
        )
    return Plan(kinds=kinds, modules=modules, copies=copies)


def _examples(kinds: Mapping[str, str], per_kind: int = 2) -> list[str]:
    """A few module names of each kind, e.g. `embeddings.word_embeddings (embedding)`."""
    shown: dict[str, list[str]] = {}
    for name, kind in kinds.items():
        if kind != "other" and len(shown.setdefault(kind, [])) < per_kind:
            shown[kind].append(f"{name} ({kind})")
    return [name for names in shown.values() for name in names]


def _all_of(recipe: str, problems: list[RecipeError], most: int = 6) -> RecipeError:
    """One error for every module a recipe cannot serve: the problems listed, the first hint."""
    if len(problems) == 1:
        return problems[0]
    lines = [str(p).removeprefix(f"recipe {recipe}: ") for p in problems]
    shown = lines[:most] + ([f"... and {len(lines) - most} more"] if len(lines) > most else [])
    return RecipeError(
        f"recipe {recipe} cannot serve {len(problems)} modules:\n" + "\n".join(f"  - {x}" for x in shown),
        hint=problems[0].hint,
    )


def _dense(tensor: torch.Tensor, dense_dtype: str) -> torch.Tensor:
    if dense_dtype == "keep" or not tensor.is_floating_point():
        return tensor
    return tensor.to(DTYPES[dense_dtype])


def _encode(
    weight: torch.Tensor, module: str, entry: ModuleEntry, pack: bool, given: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The codec's tensors for `weight`; `given` ones (trained Kronecker factors) are checked, not re-made."""
    try:
        if given is not None:
            return _checked(given, weight, module, entry)
        if pack:
            return fit(weight, entry.codec)
        return codecs.encode(weight, entry.codec)
    except CodecError as exc:  # PatternError included: the same error, naming the module
        raise exc.with_context(module=module) from None


def _checked(given: dict[str, torch.Tensor], weight: torch.Tensor, module: str, entry: ModuleEntry):
    """Stored tensors handed over by training must have the codec's layout and decode to the weight."""
    layout = codecs.layout(tuple(entry.shape), entry.codec)
    if set(given) != set(layout) or any(
        tuple(given[k].shape) != tuple(layout[k].shape) or given[k].dtype != layout[k].dtype for k in layout
    ):
        raise CodecError(f"the tensors given for {module} do not have the layout of {entry.codec.describe()}")
    check_decodes_to(given, entry.codec, weight)
    return given


def _check_copy(source: SafetensorsDir, module: str, owner: str) -> None:
    if not torch.equal(source.get(module + WEIGHT_SUFFIX), source.get(owner + WEIGHT_SUFFIX)):
        raise RecipeError(
            f"{module} and {owner} are tied in the model's class but hold different weights in the checkpoint",
            hint="set tie_word_embeddings to false in config.json if they are meant to differ",
        )


def _source_dtype(source: SafetensorsDir) -> str:
    """The float dtype holding most of the source checkpoint's bytes (what its model computes in)."""
    totals: dict[str, int] = {}
    for name in source.names():
        if source.dtype(name) in DTYPES:
            totals[source.dtype(name)] = totals.get(source.dtype(name), 0) + source.nbytes(name)
    return max(totals, key=totals.__getitem__) if totals else "float32"


def _encoder_linear_fp32(source: SafetensorsDir, kinds: Mapping[str, str]) -> int:
    return sum(4 * source.numel(m + WEIGHT_SUFFIX) for m, kind in kinds.items() if is_encoder_linear(m, kind))


def _size_report(
    source: SafetensorsDir, plan: Plan, weights: dict, dense_dtype: str, reference: Path | None
) -> SizeReport:
    """Sizes against the source, or against `reference` (the teacher a trained or layer-reduced
    student came from), so ratios always compare with the dense model the user started from."""
    checkpoint = sum(info.nbytes for name, info in weights.items() if name.endswith(".safetensors"))
    if reference is None:
        source_bytes, fp32 = source.file_nbytes(), _encoder_linear_fp32(source, plan.kinds)
    else:
        ref = SafetensorsDir(reference)
        source_bytes = ref.file_nbytes()
        fp32 = _encoder_linear_fp32(ref, module_kinds(reference, _weight_modules(ref))[0])
    stored = 0
    for module, kind in plan.kinds.items():
        if not is_encoder_linear(module, kind):
            continue
        name = module + WEIGHT_SUFFIX
        if module in plan.modules:
            stored += plan.modules[module].nbytes
        elif dense_dtype == "keep":
            stored += source.nbytes(name)
        else:
            stored += source.numel(name) * DTYPES[dense_dtype].itemsize
    return SizeReport(
        checkpoint_nbytes=checkpoint,
        source_nbytes=source_bytes,
        checkpoint_ratio=round(source_bytes / checkpoint, 4),
        encoder_linear_nbytes=stored,
        encoder_linear_fp32_nbytes=fp32,
        encoder_linear_ratio=round(fp32 / stored, 4) if stored else 0.0,
    )


def _weight_hashes(source: SafetensorsDir) -> dict[str, str]:
    return {f: sha256_file(source.directory / f) for f in source.files}


def _architecture(model_dir: Path, config: dict) -> str | None:
    """The transformers class the weights fill (config.json may name one whose head they lack)."""
    from zoo.loaders.auto import fitting_class

    return fitting_class(model_dir, config).__name__ if config.get("architectures") else None


def _dense_model(model_dir: Path):
    """The dense checkpoint as the class its weights fill, in float32 (for measuring, never for writing)."""
    from zoo.loaders import quiet_transformers
    from zoo.loaders.auto import fitting_class
    from zoo.loaders.auto import read_config as read_hf_config

    with quiet_transformers():  # the class the weights fill: never a head they lack (it would be random)
        return fitting_class(model_dir, read_hf_config(model_dir)).from_pretrained(model_dir, dtype=torch.float32)


def search_checkpoint(
    model_dir: Path,
    recipe: Recipe,
    progress: Callable[[int, int], None] | None = None,
    calibration: str | Path | None = None,
) -> Recipe:
    """The concrete per-module recipe a search recipe picks for the dense checkpoint in `model_dir`."""
    from .search import fidelity_search

    return fidelity_search(_dense_model(model_dir), model_dir, recipe, progress, calibration)


def gptq_rounding(
    model_dir: Path,
    recipe: Recipe,
    plan: Plan,
    calibration: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """GPTQ-round the planned modules it serves (recipe's `gptq:` section) on calibration text: the recipe
    with what it was measured on, and per module the codec tensors that store its rounded weight (checked to
    decode to it when made; no float copy of a weight is kept)."""
    from zoo.loaders.auto import model_class
    from zoo.loaders.auto import read_config as read_hf_config
    from zoo.loaders.naming import model_paths

    from .methods.gptq import gptq, round_clipped, serves
    from .tasks.base import TaskError
    from .tasks.fidelity import calibration_texts
    from .tasks.text import load_tokenizer

    spec = recipe.gptq
    if spec is None:
        raise RecipeError(f"recipe {recipe.name} does not round with GPTQ (it has no `gptq:` section)")
    texts, described = calibration_texts(calibration, spec.calibration)

    def skipped(why: str):
        if calibration is not None:
            raise RecipeError(f"--calibration is text, but {why}", hint="leave out --calibration for this model")
        record = spec.model_copy(update={"calibrated_on": f"not used: {why}; every module was rounded to nearest"})
        return recipe.model_copy(update={"gptq": record}), {}

    hf_config = read_hf_config(model_dir)
    cls = model_class(None, hf_config)
    if cls.main_input_name != "input_ids":  # an image or audio model: no calibration text to run it on
        return skipped(f"{cls.__name__} reads {cls.main_input_name}, not text")
    try:
        tokenizer = load_tokenizer(model_dir)
    except TaskError as exc:
        return skipped(str(exc))
    # never more tokens than the model has positions for (a long --calibration line on a small model)
    positions = hf_config.get("max_position_embeddings")
    max_length = min(spec.max_length, positions) if isinstance(positions, int) and positions > 0 else spec.max_length
    batches = [
        dict(tokenizer(texts[i : i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        for i in range(0, len(texts), 32)
    ]
    dense = _dense_model(model_dir)
    if dense.config.is_encoder_decoder:  # T5, Marian: the decoder reads the same text (teacher forcing a copy)
        batches = [
            {**b, "decoder_input_ids": b["input_ids"], "decoder_attention_mask": b["attention_mask"]} for b in batches
        ]
    paths = model_paths(dense, plan.modules)
    names = {path: name for name, path in paths.items() if path}
    stored: dict[str, dict[str, torch.Tensor]] = {}

    def store(path: str, rounded) -> None:
        name = names[path]
        codec = plan.modules[name].codec
        try:
            stored[name] = codecs.encode(rounded.weight, codec, scale=rounded.scale)
            check_decodes_to(stored[name], codec, rounded.weight)
        except CodecError as exc:
            raise exc.with_context(module=name) from None

    planned = {path: plan.modules[name].codec for name, path in paths.items() if path}
    for path, rounded in gptq(
        dense,
        planned,
        batches,
        damp=spec.damp,
        progress=progress,
    ).items():
        store(path, rounded)
    measured = len(stored)
    clipped: list[str] = []  # no inputs measured (embedding tables; a layer the text never reached), but the
    for name, entry in plan.modules.items():  # best clip still helps
        found = paths[name]
        if found and name not in stored and serves(entry.codec, tuple(entry.shape)):
            store(found, round_clipped(dense.get_submodule(found).weight, entry.codec))
            clipped.append(entry.kind)
    del dense
    rest = len(plan.modules) - len(stored)
    kinds = ", ".join(f"{clipped.count(k)} {k}" for k in sorted(set(clipped)))
    record = spec.model_copy(
        update={
            "calibrated_on": (
                f"{described}, at most {max_length} tokens each: "
                f"{measured} of {len(plan.modules)} modules rounded by GPTQ, "
                f"{len(clipped)} with no inputs to measure ({kinds or 'none'}) to the best clip"
                + (f", {rest} to nearest" if rest else "")
            )
        }
    )
    return recipe.model_copy(update={"gptq": record}), stored


def write_compact(
    model: ResolvedModel,
    recipe: Recipe,
    out: str | Path,
    *,
    pack: bool = False,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: ProgressFn | None = None,
    reference: Path | None = None,
    search_progress: Callable[[int, int], None] | None = None,
    stored: dict[str, dict[str, torch.Tensor]] | None = None,
    structure: Structure | None = None,
    calibration: str | Path | None = None,
    rounding_progress: Callable[[int, int], None] | None = None,
    measure_fidelity: bool = False,
    allow_untrained: bool = False,
    base_card: dict | None = None,
) -> CompressResult:
    """Compress (or, with pack=True, only pack) `model` with `recipe` into the directory `out`.
    `reference`: the dense model that sizes are compared with, when it is not `model` itself.
    A recipe with a `search:` section first picks each module's codec (zoo.search, fidelity to `model`).
    `stored`: module -> the codec's tensors as training made them (Kronecker factors), checked against
    the module's weight and written as they are. `structure`: the per-layer shapes of a model that
    block pruning made smaller (recorded in the manifest, so loaders rebuild them). A recipe with a `gptq:`
    section rounds the linear layers GPTQ serves on `calibration` text (default: the built-in sample
    sentences) instead of to the nearest grid point; so does a search recipe's sensitivity measure.
    `measure_fidelity`: compare the written model with the dense one on the held-out built-in sentences
    (zoo.tasks.fidelity.embedding_fidelity) and record it in the manifest. `allow_untrained`: write a
    recipe whose `training.required` says it needs fine-tuning without any. `base_card`: what the base model's
    card says of it (cards.base_card_data), when `model` is not the base model itself (a trained student)."""
    start = time.perf_counter()
    ensure_writable(out, overwrite)
    if not pack and recipe.training.keep_layers:
        raise RecipeError(
            f"recipe {recipe.name} removes layers, which only distillation can recover",
            hint="run it with --task (and --data) to fine-tune, or pick a recipe without keep_layers",
        )
    if not pack and stored is None and recipe.training.required and not allow_untrained:
        raise RecipeError(
            f"recipe {recipe.name} makes a usable model only with fine-tuning",
            hint="run it with --task (and --data), or pass --allow-untrained to write the untrained model anyway",
        )
    if recipe.pruning is not None and structure is None:
        raise RecipeError(
            f"recipe {recipe.name} prunes heads and FFN neurons by their movement during fine-tuning",
            hint="run it with --task (and --data); `zoo pack` cannot prune either",
        )
    if calibration is not None and recipe.gptq is None and recipe.search is None:
        raise RecipeError(
            f"--calibration has nothing to calibrate: recipe {recipe.name} neither rounds with GPTQ nor searches",
            hint="leave out --calibration, or use a recipe with a `gptq:` or `search:` section "
            "(4bit, 4bit-2of4, search)",
        )
    config = read_config(model.path)
    if isinstance(config.get("quantization_config"), dict):
        method = config["quantization_config"].get("quant_method", "unknown")
        raise UnsupportedModelError(
            f"{model.path} is already quantized (quant_method {method!r})",
            hint="compress a dense checkpoint (`zoo unpack` turns a zoo checkpoint back into one)",
        )
    if recipe.search is not None:
        if pack:
            raise RecipeError(
                f"recipe {recipe.name} chooses codecs by measuring a dense model, so it cannot pack",
                hint="use `zoo compress` with it; `zoo pack` takes recipes with fixed codecs",
            )
        recipe = search_checkpoint(model.path, recipe, search_progress, calibration)
    source = SafetensorsDir(model.path)
    dense_base = SafetensorsDir(reference) if reference else source
    plan = make_plan(source, model.path, recipe, pruned=structure is not None)
    rounded: dict[str, dict[str, torch.Tensor]] = {}
    if recipe.gptq is not None and pack:  # packing rounds nothing: the manifest records no calibration
        recipe = recipe.model_copy(update={"gptq": None})
    if recipe.gptq is not None and not pack and stored is None:
        recipe, rounded = gptq_rounding(model.path, recipe, plan, calibration, rounding_progress)
    with CheckpointWriter(
        out, overwrite=overwrite, max_shard_bytes=max_shard_bytes, metadata=shard_metadata(plan.modules)
    ) as writer:
        for name in source.names():
            module = name.removesuffix(WEIGHT_SUFFIX)
            entry = plan.modules.get(module) if name.endswith(WEIGHT_SUFFIX) else None
            if name.endswith(WEIGHT_SUFFIX) and module in plan.copies:
                _check_copy(source, module, plan.copies[module])  # stored once, with its owner
            elif entry is None:
                writer.add(name, _dense(source.get(name), recipe.dense_dtype))
            else:
                if module in rounded:  # GPTQ's tensors, checked when made
                    tensors = rounded.pop(module)
                else:
                    tensors = _encode(source.get(name), module, entry, pack, (stored or {}).get(module))
                for key, value in tensors.items():
                    writer.add(tensor_name(module, key), value)
                del tensors
                release_freed_memory()
            if progress is not None:
                progress(name, source.nbytes(name))
        weights = writer.close_weights()
        for name in companion_files(model.path):
            writer.copy_file(model.path / name, name)
        manifest = Manifest(
            zoo_version=__version__,
            recipe=RecipeRecord(name=recipe.name, spec=recipe.model_dump(mode="json")),
            base_model=BaseModelInfo(
                id=model.id,
                revision=model.revision,
                source=model.source,
                architecture=_architecture(model.path, config),
                card=(base_card if base_card is not None else base_card_data(model.path)) or None,
                # the dense weights the ratios compare with: the teacher's, for a trained student
                weights_sha256=_weight_hashes(dense_base),
                weights_nbytes=dense_base.file_nbytes(),
            ),
            modules=plan.modules,
            sizes=_size_report(source, plan, weights, recipe.dense_dtype, reference),
            files=writer.files,
            structure=structure,
            headers_sha256=writer.headers,
        )
        if not (config.get("dtype") or config.get("torch_dtype")):
            # with no dtype in config.json transformers takes the first float tensor's: a norm a recipe stored in
            # fp16 would make the whole model load (and compute) in fp16. Name the one the weights came in.
            config["dtype"] = _source_dtype(source)
        manifest = manifest.model_copy(update={"config_sha256": config_digest(config)})  # settings, final now
        config["quantization_config"] = manifest.to_quantization_config()
        writer.write_json("config.json", config, record=False)
        if measure_fidelity:  # the staged directory is a complete checkpoint: load it as a user would
            from .tasks.fidelity import embedding_fidelity

            measured = embedding_fidelity(writer.tmp_dir, reference or model.path, str(reference or model.id))
            if measured is not None:
                manifest = manifest.model_copy(update={"fidelity": measured})
                config["quantization_config"] = manifest.to_quantization_config()
                writer.write_json("config.json", config, record=False)
        write_card(writer.tmp_dir, name=Path(out).name)
        path = writer.commit()
    return CompressResult(path=path, manifest=manifest, seconds=time.perf_counter() - start)
