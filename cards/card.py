"""Model cards (README.md) for zoo checkpoints, built with huggingface_hub's ModelCard.

A card has YAML metadata (base_model, base_model_relation, library_name, tags, datasets, pipeline_tag and a
`model-index` with the teacher's and the compressed model's results and the compression ratios), a body
(what the model is, how to load it, a results table, how it was made with the recipe's YAML, a per-layer
table) and a PNG plot of accuracy against size. Every number is read from the manifest; a checkpoint with no
evaluation says so. The newer `.eval_results/*.yaml` format is written beside it for the measured results.

Card files are not listed in the manifest's `files` (the card is regenerated as results and siblings arrive).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # the environment has no types-PyYAML stubs
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from zoo.formats.manifest import FIDELITY_FLOOR, Manifest
from zoo.formats.reader import read_config
from zoo.formats.writer import write_file_atomic

from .facts import Results, layer_rows, methods, other_tensors_nbytes, pipeline_tag, results
from .plot import Point, have_matplotlib, plot_accuracy_vs_size

README = "README.md"
PLOT = "card/accuracy_vs_size.png"
EVAL_RESULTS_DIR = ".eval_results"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class CardFiles:
    readme: Path
    plot: Path | None
    eval_results: Path | None
    card: ModelCard

    @property
    def has_results(self) -> bool:
        """The card reports measured results (a model-index), so it has something to plot."""
        data = self.card.data
        assert isinstance(data, ModelCardData), "a ModelCard's data is a ModelCardData (its card_data_class)"
        return data.eval_results is not None


_BASE_CARD_KEYS = (
    "license",
    "license_name",
    "license_link",
    "library_name",
    "language",
    "datasets",
    "tags",
    "pipeline_tag",
)


def base_card_data(directory: str | Path) -> dict[str, Any] | None:
    """What a model's own card (README.md, read with huggingface_hub's ModelCard) says of its identity: the
    licence, library, language, datasets, tags and pipeline tag a compressed copy must keep. None without one."""
    path = Path(directory) / README
    if not path.is_file():
        return None
    try:
        data = ModelCard.load(path).data.to_dict()
    except (ValueError, OSError, yaml.YAMLError):
        return None
    kept = {key: data[key] for key in _BASE_CARD_KEYS if data.get(key) not in (None, "", [])}
    return kept or None


def _unique(*groups) -> list:
    return list(dict.fromkeys(x for group in groups for x in (group if isinstance(group, list) else [group]) if x))


def manifest_of(directory: Path) -> tuple[Manifest, dict[str, Any]]:
    config = read_config(directory)
    return Manifest.from_quantization_config(
        config.get("quantization_config"), where=str(directory / "config.json")
    ), config


def point_of(label: str, manifest: Manifest, role: str = "sibling") -> Point | None:
    """A plot point for a zoo checkpoint: its headline accuracy against its size; None when unmeasured."""
    r = results(manifest).row("compressed")
    return None if r.value is None else Point(label, r.size_bytes, r.value, role)


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _hub_base_model(manifest: Manifest) -> str | None:
    """The base model as a Hub id, when it is one (a local path means nothing on a hub page)."""
    base = manifest.base_model
    return base.id if base.source in ("hub", "packaged") and _HUB_ID.match(base.id) else None


def _eval_results(manifest: Manifest, res: Results, task_type: str) -> list[EvalResult]:
    """model-index entries: every recorded result, the teacher's as `teacher_accuracy`-style metrics, plus the
    compression ratios and retention beside the headline result."""
    out = []
    for r in manifest.evaluation:
        metric = r.metric if r.role == "compressed" else f"teacher_{r.metric}"
        name = f"{r.metric} ({'compressed' if r.role == 'compressed' else 'dense teacher'})"
        if r.metric == "teacher_agreement":
            name = "agreement with the dense teacher"
        out.append(
            EvalResult(
                task_type=task_type,
                task_name=r.task,
                dataset_type=r.dataset,
                dataset_name=r.dataset,
                dataset_split=r.split,
                metric_type=metric,
                metric_name=name,
                metric_value=r.value,
            )
        )
    if res.measured:
        dataset = res.dataset
        assert dataset is not None, "a measured result names its dataset (results: the headline's)"

        def beside(metric_type: str, metric_name: str, metric_value: float) -> EvalResult:
            return EvalResult(
                task_type=task_type,
                task_name=res.task,
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=res.split,
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=metric_value,
            )

        c = res.row("compressed")
        if c.retention is not None:
            out.append(beside("retention", "retention of the teacher's accuracy", round(c.retention, 6)))
        s = manifest.sizes
        out.append(
            beside("compression_ratio", "compression ratio, whole checkpoint vs the dense teacher", s.checkpoint_ratio)
        )
        out.append(
            beside(
                "encoder_linear_compression_ratio",
                "compression ratio, encoder linear weights vs fp32",
                s.encoder_linear_ratio,
            )
        )
    return out


def _results_section(manifest: Manifest, res: Results, plot: str | None, plot_note: str) -> list[str]:
    lines = ["## Results", ""]
    if not res.measured:
        lines += [
            (
                "**No accuracy was measured for this checkpoint.** It was compressed without a task, so no evaluation "
                "is recorded in its manifest and none is shown here. Measure it with "
                "`zoo eval DIR --task TASK --data DATA`, or compress with `--task` to fine-tune and evaluate."
            ),
            "",
        ]
    else:
        t = manifest.training
        length = f", {t.max_length} tokens per example" if t and t.max_length else ""
        assert res.metric is not None, "a measured result names its metric (results: the headline's)"
        heading = (
            f"{res.metric.capitalize()} on **{res.dataset}** ({res.split} split, {res.n_examples} examples{length}):"
        )
        lines += [heading, ""]
    header = (
        "| model | "
        + (f"{res.metric} | retention | " if res.measured else "")
        + "size on disk | ratio (whole checkpoint) | ratio (encoder linear vs fp32) |"
    )
    lines += [header, "|" + "---|" * (header.count(" | ") + 1)]
    for r in res.rows:
        cells = [r.model]
        if res.measured:
            cells += [_pct(r.value), _pct(r.retention)]
        cells += [_mb(r.size_bytes), f"{r.checkpoint_ratio:.2f}x", f"{r.encoder_linear_ratio:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if manifest.fidelity is not None:
        f = manifest.fidelity
        lines += [
            (
                f"**Fidelity to the dense model:** right after compression, before any fine-tuning, this model's "
                f"mean-pooled embeddings had a mean cosine of {f.value:.4f} to {f.reference}'s on {f.measured_on}."
                + (
                    ""
                    if f.faithful
                    else f" That is below {FIDELITY_FLOOR}: fine-tune it on your task before use "
                    "(`zoo compress MODEL --recipe RECIPE --task TASK --data DIR`)."
                )
            ),
            "",
        ]
    if res.agreement is not None:
        lines += [
            (
                f"The compressed model agrees with the dense teacher on {_pct(res.agreement)} of the "
                f"{res.split} examples."
            ),
            "",
        ]
    if res.extra:
        lines += [
            "Also recorded: "
            + "; ".join(
                f"{r.role} {r.metric} {_pct(r.value)} on {r.dataset} {r.split} ({r.n_examples} examples)"
                for r in res.extra
            )
            + ".",
            "",
        ]
    lines += [
        (
            "Sizes are bytes of the weight files; the teacher's are its fp32 checkpoint "
            f"({_mb(manifest.sizes.source_nbytes)}). The encoder linear weights (the transformer blocks' matrices) "
            f"take {_mb(manifest.sizes.encoder_linear_nbytes)} here against "
            f"{_mb(manifest.sizes.encoder_linear_fp32_nbytes)} in fp32."
        ),
        "",
    ]
    if plot:
        lines += [f"![Accuracy against size: this model, its dense teacher and other zoo models]({plot})", ""]
    elif plot_note:
        lines += [plot_note, ""]
    return lines


def _load_section(name: str, tag: str, sentence_transformers: bool) -> list[str]:
    from zoo.loaders.auto import TASKS  # the table zoo loads with (imported here: it imports transformers)

    auto = TASKS.get(tag, "AutoModel")
    st = (
        [
            "```python",
            'import zoo  # first: teaches transformers the "zoo" quantization method',
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer("{name}")',
            'embeddings = model.encode(["A sentence to embed."])',
            "```",
            "",
            "Or with transformers alone:",
            "",
        ]
        if sentence_transformers
        else []
    )
    return [
        "## How to load",
        "",
        "```bash",
        "pip install zoo-compress",
        "```",
        "",
        *st,
        "```python",
        'import zoo  # teaches transformers the "zoo" quantization method',
        f"from transformers import {auto}",
        "",
        f'model = {auto}.from_pretrained("{name}")',
        '# or: model = zoo.from_pretrained("' + name + '", mode="packed")  # materialize | packed | kernel',
        "```",
        "",
        (
            '**`import zoo` first.** Without it transformers does not know `quant_method: "zoo"` and may load the '
            "compressed layers as random weights; `zoo.from_pretrained` checks that every compressed module was "
            "rebuilt. `zoo unpack DIR --out DENSE` writes a plain dense checkpoint for tools that cannot import zoo."
        ),
        "",
    ]


def _made_section(manifest: Manifest) -> list[str]:
    m = manifest
    lines = ["## How it was made", ""]
    base = m.base_model
    lines.append(
        f"- Base model: `{base.id}` ({base.source}"
        + (f", revision `{base.revision}`" if base.revision else "")
        + f"), {_mb(base.weights_nbytes)} of weights."
    )
    lines.append(f"- Recipe: `{m.recipe.name}` — {m.recipe.spec.get('description', '')}".rstrip(" —"))
    gptq = m.recipe.spec.get("gptq")
    gptq = gptq if isinstance(gptq, dict) else {}  # the spec is free-form data a checkpoint brings
    if m.training is None and gptq.get("calibrated_on"):
        lines.append(f"- Post-training rounding (GPTQ): {gptq['calibrated_on']}.")
    if m.training is not None:
        t = m.training
        layers = f"; keeps layers {t.keep_layers} of the teacher" if t.keep_layers else ""
        lines.append(
            f"- Fine-tuned with knowledge distillation from the dense teacher `{t.teacher}` on {t.dataset} "
            f"({t.task}): {t.epochs:g} epochs, {t.steps} steps, {t.seconds / 60:.1f} min on {t.device}"
            + (f" x {t.world_size} processes ({t.backend})" if t.world_size and t.world_size > 1 else "")
            + (f", {t.global_batch_size} examples per step" if t.global_batch_size else "")
            + (f", {t.max_length} tokens per example" if t.max_length else "")
            + f"{layers}."
        )
        if t.labels:
            lines.append(f"- Labels (class 0, 1, ...): {', '.join(f'`{x}`' for x in t.labels)}.")
    else:
        lines.append("- Post-training compression: no fine-tuning.")
    lines.append(
        f"- Written by zoo {m.zoo_version}, format version {m.format_version}; every file's sha256 is in "
        "config.json and checked on load."
    )
    if m.structure is not None:
        st = m.structure
        lines.append(
            f"- Block movement pruning removed whole attention heads and FFN neurons: heads per layer "
            f"{st.attention_heads} (of {st.heads_before}), FFN widths {st.intermediate_sizes} (of "
            f"{st.intermediate_size_before}). The layers are plain dense ones of these shapes; the manifest's "
            "`structure` records them and zoo's loader rebuilds them (`zoo unpack` pads them back with zeros)."
        )
    searched = m.recipe.spec.get("searched")
    searched = searched if isinstance(searched, dict) else None
    if searched:
        lines.append(
            f"- Per-layer settings chosen by a ratio-budget search (NxMiFormer): target {searched['target_ratio']:g}x, "
            f"reached {searched['achieved_ratio']:.2f}x over {len(searched['modules'])} modules, from "
            f"{len(searched['candidates'])} candidates ({', '.join(searched['candidates'])}); sensitivity: "
            f"{searched['measure']}. The per-layer table below shows each module's loss increase as the search "
            "scored it (measured end to end, or with `measure: block` mostly estimated from its block's output error)."
        )
    spec = {k: v for k, v in m.recipe.spec.items() if k != "searched"}
    if searched:  # one rule per module: the per-layer table says it better
        spec["rules"] = f"{len(spec['rules'])} rules, one per module (see the per-layer table)"
    lines += [
        "",
        "The recipe, as resolved:",
        "",
        "```yaml",
        yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100).rstrip(),
        "```",
        "",
    ]
    return lines


def _layers_section(manifest: Manifest) -> list[str]:
    rows = layer_rows(manifest)
    if not rows:  # a pruned model with plain dense layers
        return [
            "## Per-layer table",
            "",
            "No module is stored through a codec: every layer is plain dense, in the "
            "shapes described above. " + f"All tensors: {_mb(other_tensors_nbytes(manifest))}.",
            "",
        ]
    searched = manifest.recipe.spec.get("searched")
    searched = searched.get("modules", {}) if isinstance(searched, dict) else {}
    extra = " loss increase (search) |" if searched else ""
    lines = [
        "## Per-layer table",
        "",
        "| module | method | bits | sparsity | bytes | bits per weight | ratio |" + extra,
        "|---|---|---|---|---|---|---|" + ("---|" if searched else ""),
    ]
    for r in rows:
        found = next((v for k, v in searched.items() if r.module == k or r.module.endswith("." + k)), None)
        cell = (f" {found['loss_increase']:.4g} |" if found else " - |") if searched else ""
        shared = f" (shared with {', '.join(f'`{t}`' for t in r.tied)})" if r.tied else ""
        lines.append(
            f"| `{r.module}`{shared} | {r.method} | {r.bits:.3g} | {100 * r.sparsity:.0f}% | {r.nbytes:,} | "
            f"{r.bits_per_weight:.2f} | {r.ratio:.2f}x |" + cell
        )
    dense = manifest.recipe.spec.get("dense_dtype", "keep")
    dense = "in its original dtype" if dense == "keep" else f"as {dense}"
    tied = (
        " A module shared with others is one weight the model ties to several layers: stored once, used by all."
        if any(r.tied for r in rows)
        else ""
    )
    lines += [
        "",
        (
            f"{len(rows)} compressed modules, {_mb(sum(r.nbytes for r in rows))}. Everything else (norms, "
            f"biases, heads, any layer no rule took, and file headers) is stored {dense}: "
            f"{_mb(other_tensors_nbytes(manifest))}.{tied}"
        ),
        "",
    ]
    return lines


def build_card(
    directory: str | Path, *, name: str | None = None, plot: str | None = None, plot_note: str = ""
) -> ModelCard:
    """The card of the zoo checkpoint in `directory` (not written). `name`: the repo id or stub people load it by
    [default: the directory's name]; `plot`: relative path of the plot, when one was drawn."""
    directory = Path(directory)
    manifest, config = manifest_of(directory)
    name = name or directory.resolve().name
    res = results(manifest)
    # the class the weights fill decides what the model does: config.json may name a head they lack
    arch = manifest.base_model.architecture
    tag = pipeline_tag({**config, "architectures": [arch]} if arch else config)
    base = manifest.base_model.card or {}
    # post-training, the model is the base model made smaller: its library, task and tags stay. A model fine-tuned
    # with --task has a new head: a transformers model for that task. The licence, language and datasets stay.
    same_kind = manifest.training is None
    library = (base.get("library_name") if same_kind else None) or "transformers"
    evals = _eval_results(manifest, res, tag)
    data = ModelCardData(
        base_model=_hub_base_model(manifest),
        base_model_relation="quantized",
        license=base.get("license"),
        license_name=base.get("license_name"),
        license_link=base.get("license_link"),
        language=base.get("language"),
        library_name=library,
        pipeline_tag=(base.get("pipeline_tag") if same_kind else None) or tag,
        tags=_unique(
            base.get("tags") if same_kind else [],
            ["zoo", "compressed", f"zoo-recipe-{manifest.recipe.name}", *methods(manifest)],
        ),
        datasets=_unique(base.get("datasets") or [], sorted({r.dataset for r in manifest.evaluation})) or None,
        model_name=name if evals else None,
        eval_results=evals or None,
    )
    s = manifest.sizes
    intro = (
        f"This is `{manifest.base_model.id}` compressed by [zoo](https://pypi.org/project/zoo-compress/) with the "
        f"`{manifest.recipe.name}` recipe into a **{_mb(s.checkpoint_nbytes)} checkpoint, {s.checkpoint_ratio:.2f}x "
        f"smaller than the dense model's {_mb(s.source_nbytes)}** (every weight file counted: embeddings, norms "
        f"and heads included). {len(manifest.modules)} modules are compressed "
        f"({', '.join(sorted({e.codec.describe() for e in manifest.modules.values()}))}); the encoder linear "
        f"weights alone are {s.encoder_linear_ratio:.2f}x smaller than fp32. The bytes on disk are the packed "
        "values, not fake-quantized floats."
    )
    body = [f"# {name}", "", intro, ""]
    body += _results_section(manifest, res, plot, plot_note)
    body += _load_section(name, tag, library == "sentence-transformers" and (directory / "modules.json").is_file())
    body += _made_section(manifest)
    body += _layers_section(manifest)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _eval_results_yaml(manifest: Manifest, res: Results) -> str | None:
    """The newer `.eval_results/*.yaml` format (huggingface_hub's EvalResultEntry): this model's own results."""
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    entries = [
        EvalResultEntry(
            dataset_id=r.dataset,
            task_id=r.task,
            value=r.value,
            notes=f"{r.metric} on the {r.split} split ({r.n_examples} examples), zoo recipe {manifest.recipe.name}",
        )
        for r in manifest.evaluation
        if r.role == "compressed" and r.metric != "teacher_agreement"
    ]
    return yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False) if entries else None


def write_card(
    directory: str | Path, *, name: str | None = None, siblings: Sequence[Point] = (), draw_plot: bool = True
) -> CardFiles:
    """Write README.md (and the plot and `.eval_results/` file, when there are results) into `directory`.
    Files of an earlier card that no longer apply are removed, so the card never points at stale files."""
    directory = Path(directory)
    manifest, _ = manifest_of(directory)
    res = results(manifest)
    plot_path = directory / PLOT
    plot_ref, note = None, ""
    if res.measured and draw_plot and have_matplotlib():
        points = []
        teacher = res.row("teacher")
        if teacher.value is not None:
            points.append(Point("dense teacher", teacher.size_bytes, teacher.value, "teacher"))
        points += [p for p in siblings if p.role == "sibling"]
        compressed = res.row("compressed")
        assert compressed.value is not None, "a measured result has the compressed model's value"
        points.append(Point(manifest.recipe.name, compressed.size_bytes, compressed.value, "this"))
        plot_accuracy_vs_size(
            points,
            plot_path,
            metric=res.metric or "accuracy",
            title=f"{res.dataset} {res.split}: accuracy against size",
        )
        plot_ref = PLOT
    else:
        plot_path.unlink(missing_ok=True)
        if res.measured and draw_plot:
            note = "(No plot: matplotlib is not installed. `pip install 'zoo-compress[cards]'`, then `zoo card DIR`.)"
    card = build_card(directory, name=name, plot=plot_ref, plot_note=note)
    write_file_atomic(directory / README, str(card))
    eval_dir = directory / EVAL_RESULTS_DIR
    eval_path = eval_dir / f"{(res.dataset or 'none').replace('/', '__')}.yaml"
    text = _eval_results_yaml(manifest, res)
    if eval_dir.is_dir():
        for stale in eval_dir.glob("*.yaml"):
            if stale != eval_path or text is None:
                stale.unlink()
    if text is not None:
        write_file_atomic(eval_path, text)
    elif eval_dir.is_dir() and not any(eval_dir.iterdir()):
        eval_dir.rmdir()
    return CardFiles(directory / README, plot_path if plot_ref else None, eval_path if text is not None else None, card)
