"""Recipes: which modules to compress and how, as YAML validated by pydantic.

A recipe is a list of rules; the first rule whose `targets` regexes match a module's name
(re.search), whose `ignore` regexes do not, and whose `kinds` include the module's kind
(linear, embedding, conv) decides the module's codec. Modules no rule takes stay dense
(cast to `dense_dtype` unless it is `keep`). Built-in recipes are YAML files next to this
module; `--recipe path/to/file.yaml` works the same way.

A rule's codec is one of the stored codecs (formats.spec), or `{codec: kronecker, ratio: R}`:
Kronecker factors whose shapes zoo chooses for each module from the target ratio (see
`KroneckerTarget`); the manifest then records the concrete shapes.

The built-in recipes' names, YAML and descriptions are read here, without pydantic's models (and so without
the codecs and torch): `zoo recipes` lists them in a fraction of a second. Everything else (Recipe,
load_recipe...) lives in zoo.recipes.recipe and is loaded on first use."""

from __future__ import annotations

import importlib
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped]  # PyYAML has no inline types, and types-PyYAML is not a dependency

if TYPE_CHECKING:
    from .recipe import (
        BLOCK_PATTERN,
        Kind,
        KroneckerTarget,
        Recipe,
        Rule,
        RuleCodec,
        is_encoder_linear,
        load_recipe,
        parse_recipe,
        with_target_ratio,
    )

_FROM_RECIPE = (
    "BLOCK_PATTERN",
    "Kind",
    "KroneckerTarget",
    "Recipe",
    "Rule",
    "RuleCodec",
    "is_encoder_linear",
    "load_recipe",
    "parse_recipe",
    "with_target_ratio",
)


def _builtin_dir():
    return resources.files(__package__).joinpath("builtin")


def builtin_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def builtin_text(name: str) -> str:
    return _builtin_dir().joinpath(f"{name}.yaml").read_text()


def builtin_description(name: str) -> str:
    """A built-in recipe's description, read from its YAML alone (what `zoo recipes` lists); the tests check that
    every built-in recipe validates, with this description."""
    return yaml.safe_load(builtin_text(name))["description"]


def __getattr__(name: str) -> Any:
    if name in _FROM_RECIPE:
        return getattr(importlib.import_module(f"{__name__}.recipe"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BLOCK_PATTERN",
    "Kind",
    "KroneckerTarget",
    "Recipe",
    "Rule",
    "RuleCodec",
    "builtin_description",
    "builtin_names",
    "builtin_text",
    "is_encoder_linear",
    "load_recipe",
    "parse_recipe",
    "with_target_ratio",
]
