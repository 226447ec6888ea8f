"""The recipe itself: its pydantic models, validated against the codecs' specs (zoo.formats.spec, which imports
torch with the codecs), and reading one from YAML with errors in the words of the YAML. The package's docstring
says what a recipe is."""

from __future__ import annotations

import difflib
import functools
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml  # type: ignore[import-untyped]  # PyYAML has no inline types, and types-PyYAML is not a dependency
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from zoo.formats.errors import CodecError
from zoo.formats.manifest import BLOCK_PATTERN, is_encoder_linear  # noqa: F401 - re-exported (bench, tests)
from zoo.formats.spec import CODEC_NAMES, CodecSpec, DenseSpec, KroneckerSpec, ValueSpec

from ..errors import RecipeError
from . import builtin_names, builtin_text
from .gptq import GPTQSpec
from .pruning import PruningSpec
from .search import SearchRecord, SearchSpec
from .training import TrainingSpec

Kind = Literal["linear", "embedding", "conv"]


def _linear_only() -> list[Kind]:
    return ["linear"]


class KroneckerTarget(BaseModel):
    """Kronecker factors whose shapes are chosen per module from a target ratio: `ratio` is how many
    times smaller than fp32 each matched weight must be stored (factors through `factors` included).
    Of the splits that reach it, zoo takes the one storing the most bytes, then the fewest
    multiply-adds (formats.codecs.kronecker.shapes_for_ratio); embedding tables keep B to one row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    codec: Literal["kronecker"] = "kronecker"
    ratio: float = Field(gt=1)
    rank: int = Field(default=1, ge=1)
    factors: ValueSpec = DenseSpec()

    def describe(self) -> str:
        return f"kron {self.ratio:g}x r{self.rank} + {self.factors.describe()}"

    def resolve(self, shape: tuple[int, ...], kind: str) -> KroneckerSpec:
        from zoo.formats.codecs.kronecker import shapes_for_ratio

        return shapes_for_ratio(shape, self.ratio, rank=self.rank, factors=self.factors, one_row_b=kind == "embedding")


def _codec_tag(value: Any) -> str:
    if isinstance(value, KroneckerTarget) or (isinstance(value, dict) and "ratio" in value):
        return "target"
    return "codec"


RuleCodec = Annotated[
    Annotated[CodecSpec, Tag("codec")] | Annotated[KroneckerTarget, Tag("target")],
    Discriminator(_codec_tag),
]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # no targets: every module inside the transformer blocks (zoo.formats.manifest.BLOCK_PATTERN)
    targets: list[str] = Field(default_factory=lambda: [BLOCK_PATTERN], min_length=1)
    ignore: list[str] = Field(default_factory=list)
    kinds: list[Kind] = Field(default_factory=_linear_only, min_length=1)
    codec: RuleCodec

    @field_validator("targets", "ignore")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {p!r}: {exc}") from None
        return patterns

    def matches(self, module: str, kind: str) -> bool:
        return (
            kind in self.kinds
            and any(re.search(p, module) for p in self.targets)
            and not any(re.search(p, module) for p in self.ignore)
        )


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str
    rules: list[Rule] = Field(default_factory=list, description="codecs; may be empty for a recipe that only prunes")
    dense_dtype: Literal["keep", "float16", "bfloat16"] = "keep"
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    search: SearchSpec | None = Field(
        None, description="choose each module's codec by a ratio-budget search; the rules only select the modules"
    )
    searched: SearchRecord | None = Field(None, description="what a search chose (set by zoo, not written by hand)")
    pruning: PruningSpec | None = Field(
        None, description="block movement pruning of heads and FFN neurons (needs --task)"
    )
    gptq: GPTQSpec | None = Field(
        None, description="post-training rounding with GPTQ on calibration text instead of round-to-nearest"
    )

    @model_validator(mode="after")
    def _something_to_do(self) -> Recipe:
        if not self.rules and self.pruning is None:
            raise ValueError("a recipe needs rules (codecs), a pruning section, or both")
        if self.pruning is not None and self.search is not None:
            raise ValueError("a search and pruning cannot be combined yet")
        return self

    def codec_for(self, module: str, kind: str) -> CodecSpec | KroneckerTarget | None:
        """The codec of the first rule that takes the module (a ratio target still unresolved)."""
        for rule in self.rules:
            if rule.matches(module, kind):
                return rule.codec
        return None

    def spec_for(self, module: str, kind: str, shape: tuple[int, ...]) -> CodecSpec | None:
        """The concrete codec for a module whose weight has `shape`: ratio targets get their factor
        shapes here. A target no factor shape reaches is a RecipeError naming the module."""
        spec = self.codec_for(module, kind)
        if isinstance(spec, KroneckerTarget):
            try:
                spec = spec.resolve(tuple(shape), kind)
            except CodecError as exc:
                raise RecipeError(
                    f"recipe {self.name}: module {module} {list(shape)}: {exc}", hint=exc.hint, module=module
                ) from None
        if spec is not None:
            self._check_rows(module, kind, shape, spec)
        return spec

    def _check_rows(self, module: str, kind: str, shape, spec: CodecSpec) -> None:
        """A scale group should tile a row (or cover it). An embedding is read row by row, so there it must.
        A linear or conv row may end in a shorter group, but only for a power-of-two size, the convention a
        model of odd width meets (g128 on 160-wide rows); any other size that does not divide the row (100
        on 384) is a mistake, caught before any work."""
        group = getattr(spec, "group_size", None)
        cols = math.prod(shape[1:])
        ragged_ok = kind != "embedding" and group is not None and group & (group - 1) == 0
        if group is not None and group < cols and cols % group and not ragged_ok:
            fits = [g for g in (256, 128, 96, 64, 32) if g < cols and cols % g == 0][:3]
            raise RecipeError(
                f"recipe {self.name}: group_size {group} does not tile the {cols}-wide rows of the {kind} {module}",
                hint=f"use a size that divides {cols}"
                + (f" ({', '.join(map(str, fits))})" if fits else "")
                + " or null (one scale per row)",
            )

    def spec_for_tied(self, module: str, kind: str, partners: list[tuple[str, str]], shape) -> CodecSpec | None:
        """`spec_for` a module and the (name, kind) partners whose weights the model ties to it: they are one
        tensor, stored once, so the rules that take any of them must agree; one no rule takes follows the others."""
        given = {
            name: spec for name, k in [(module, kind), *partners] if (spec := self.spec_for(name, k, shape)) is not None
        }
        specs = list(given.values())
        if any(spec != specs[0] for spec in specs[1:]):
            described = ", ".join(f"{name}: {spec.describe()}" for name, spec in given.items())
            raise RecipeError(
                f"recipe {self.name} gives tied modules different codecs ({described})",
                hint="the model ties their weights, so they are stored once: give them one codec, "
                "or ignore all of them",
            )
        return specs[0] if specs else None

    @cached_property
    def summary(self) -> str:
        parts = [rule.codec.describe() for rule in self.rules]
        if self.pruning is not None:
            parts.append(f"prune {self.pruning.heads:.0%} of heads, {self.pruning.ffn:.0%} of FFN neurons")
        return "; ".join(parts)


def parse_recipe(text: str, source: str) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source} must be a YAML mapping with name, description and rules")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        if len(problems) == 1:
            raise RecipeError(f"{source}: {problems[0]}") from None
        raise RecipeError(
            f"{source} has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        ) from None


@functools.cache
def _known_keys() -> frozenset[str]:
    """Every key a recipe may hold, at any depth: where a misspelt one gets its suggestion."""
    schema = Recipe.model_json_schema()
    keys = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        keys |= set(definition.get("properties", {}))
    return frozenset(keys)


def _where(loc: tuple) -> str:
    """`rules[0].codec` for pydantic's ('rules', 0, 'codec', 'codec', 'int'): the union tags it adds (the rule's
    codec-or-target tag, then the codec name) are not keys the user wrote."""
    parts: list[str] = []
    previous = None
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif previous == "codec" and (item in ("codec", "target") or item in CODEC_NAMES):
            pass
        else:
            parts.append(("." if parts else "") + str(item))
        previous = item if not isinstance(item, int) else previous
    return "".join(parts) or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    """Every problem of a recipe, in the words of its YAML: an unknown key with the known one it is closest
    to (which then explains a missing one), a value outside a choice with the closest choice."""
    errors = exc.errors()
    unknown = {}
    for err in errors:
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), sorted(_known_keys()), n=1)
            unknown[err["loc"]] = close[0] if close else None
    explained = {loc[:-1] + (hint,) for loc, hint in unknown.items() if hint}
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        where = _where(loc[:-1]) if loc[:-1] else "(top level)"
        if err["type"] == "extra_forbidden":
            hint = unknown[loc]
            problems.append(f"{where}: unknown key {loc[-1]!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
        elif err["type"] == "missing" and loc in explained:
            continue  # the misspelt key above is this one
        elif err["type"] == "literal_error":
            choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
            close = difflib.get_close_matches(str(err["input"]), choices, n=1)
            problems.append(
                f"{_where(loc)}: {err['input']!r} is not one of {', '.join(choices)}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        else:
            problems.append(f"{_where(loc)}: {err['msg']}")
    return list(dict.fromkeys(problems))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by name, or a YAML file by path."""
    text = str(name_or_path)
    if text in builtin_names():
        return parse_recipe(builtin_text(text), f"built-in recipe {text}")
    path = Path(text).expanduser()
    if path.is_file():
        return parse_recipe(path.read_text(), str(path))
    if path.suffix in (".yaml", ".yml") or "/" in text:
        raise RecipeError(f"recipe file {path} does not exist")
    close = difflib.get_close_matches(text, builtin_names(), n=3)
    raise RecipeError(
        f"unknown recipe {text!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
        hint="`zoo recipes` lists the built-in recipes; a path to a YAML file works too",
    )


def with_target_ratio(recipe: Recipe, target_ratio: float) -> Recipe:
    """`recipe` with its search aiming at `target_ratio` (how many times smaller than the dense model the whole
    checkpoint must be): `--target-ratio`. A recipe without a search section fixes its codecs, so it is refused."""
    if recipe.search is None:
        raise RecipeError(
            f"--target-ratio applies to search recipes; {recipe.name} fixes its codecs",
            hint="use --recipe search --target-ratio 12, or leave --target-ratio out",
        )
    if not target_ratio > 1:  # NaN too
        raise RecipeError(f"--target-ratio must be above 1 (got {target_ratio:g})", hint="e.g. --target-ratio 12")
    return recipe.model_copy(update={"search": recipe.search.model_copy(update={"target_ratio": target_ratio})})
