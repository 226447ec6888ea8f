"""`zoo recipes`: the built-in recipes, or one as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import fails_cleanly, out


@fails_cleanly
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe's YAML.")] = None,
) -> None:
    """List the built-in recipes, or print one as YAML (copy it to start your own)."""
    from ..recipes import builtin_description, builtin_names, builtin_text

    if name is not None:
        from ..recipes import load_recipe  # validating takes the codecs' specs (and torch); the list below does not

        load_recipe(name)  # unknown names fail with suggestions
        # plain text: rich would take `kinds: [linear]` for markup and print `kinds: `
        text = builtin_text(name) if name in builtin_names() else Path(name).read_text()
        out.print(text, highlight=False, markup=False, soft_wrap=True, end="" if text.endswith("\n") else "\n")
        return
    table = Table(show_edge=False, header_style="bold")
    table.add_column("recipe")
    table.add_column("what it does")
    for recipe_name in builtin_names():
        table.add_row(recipe_name, builtin_description(recipe_name))
    out.print(table)
