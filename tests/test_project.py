"""The project's own promises: CI runs README's test command; imports point one way only."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    test_commands = [block.strip() for block in readme_commands() if "pytest" in block]
    assert len(test_commands) == 1, "README names exactly one test command"
    assert test_commands[0] in ci


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return result.stdout.strip()


LAYERS = ("formats", "loaders", "cards")  # folders beside zoo/ that install as zoo.formats, zoo.loaders, zoo.cards


def loaded_beyond(imports: str, allowed: tuple[str, ...]) -> list[str]:
    """Modules of transformers or zoo, beyond `zoo` itself and the `allowed` prefixes, that `imports` loads."""
    code = (
        f"import sys, {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'zoo')"
        f" and m not in ('zoo', 'zoo._register') and not m.startswith({allowed!r})))"
    )
    return eval(run_python(code))


def test_formats_does_not_import_transformers_or_upper_packages():
    imports = "zoo.formats, zoo.formats.codecs, zoo.formats.reader, zoo.formats.writer, zoo.formats.fit"
    assert loaded_beyond(imports, ("zoo.formats",)) == []


@pytest.mark.slow
def test_loaders_does_not_import_zoo_or_cards():
    assert loaded_beyond("zoo.loaders", ("zoo.formats", "zoo.loaders", "transformers")) == []


def test_the_layers_install_under_zoo_only():
    """`pip install zoo-compress` puts one import package in site-packages: zoo. The folders beside zoo/ refuse
    their bare names even where a source tree's root is on sys.path, so no class is ever loaded twice."""
    for layer in LAYERS:
        result = subprocess.run(
            [sys.executable, "-c", f"import {layer}"], cwd=REPO, capture_output=True, text=True, check=False
        )
        assert result.returncode != 0 and f"import zoo.{layer}, not {layer}" in result.stderr
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(("zoo",) * (path.parts[0] != "zoo") + path.parent.parts)
        for top in ("zoo", *LAYERS)
        for path in (p.relative_to(REPO) for p in (REPO / top).rglob("__init__.py"))
    }
    assert sorted(setuptools["packages"]) == sorted(folders)
    assert setuptools["package-dir"] == {f"zoo.{layer}": layer for layer in LAYERS}


def test_import_statements_point_down_only():
    """formats <- loaders <- cards <- zoo: each layer imports only those below it (by their installed names)."""
    allowed = {"formats": set(), "loaders": {"formats"}, "cards": {"formats", "loaders"}, "zoo": set(LAYERS)}
    statement = re.compile(r"^\s*(?:from|import)\s+(zoo(?:\.\w+)?|formats|loaders|cards)\b", re.MULTILINE)
    for package, may_import in allowed.items():
        for path in (REPO / package).rglob("*.py"):
            for name in statement.findall(path.read_text()):
                assert name.split(".")[0] == "zoo", f"{path} imports the bare name {name}"
                target = name.split(".")[1] if name.count(".") and name.split(".")[1] in LAYERS else "zoo"
                assert target == package or target in may_import, f"{path} imports {name}"


def tracked_text_files() -> list:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [
        REPO / name for name in listed if name.endswith((".py", ".md", ".yaml", ".toml", ".cfg")) or name == ".ci/run"
    ]


def test_nothing_reads_outside_the_clone():
    """A fresh clone with nothing beside it passes its tests and runs README's examples: no file
    reaches into a sibling folder, as the data once did."""
    outside = re.compile("\\.\\./" + "shared|" + '/ *"' + 'shared"')  # split: this file must not match itself
    offenders = [str(p.relative_to(REPO)) for p in tracked_text_files() if p.exists() and outside.search(p.read_text())]
    assert offenders == []


def test_readme_data_paths_ship_with_the_repository():
    blocks = re.findall(r"```\w*\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    paths = set(re.findall(r"--data\s+(\S+)", "\n".join(blocks)))
    assert paths, "README's examples name their data"
    for path in paths:
        assert (REPO / path / "train.tsv").is_file(), f"README uses --data {path}, which the repository lacks"
    assert (REPO / "tests" / "data" / "README.md").read_text().count("Licence") == 1


def test_readme_outputs_are_ignored_by_git():
    """README's first command used to leave a 52 MB untracked minilm-4bit-2of4/ in `git status`."""
    from zoo.recipes import builtin_names

    names = [f"minilm-{r}" for r in builtin_names()] + [f"minilm-rt-{r}-rotten_tomatoes" for r in builtin_names()]
    names += ["minilm-rt", "minilm-4bit-dense", "minilm-rt.work", "minilm-4bit-2of4-onnx"]
    checked = subprocess.run(
        ["git", "check-ignore", "--no-index", *[f"{n}/config.json" for n in names]],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    ignored = {line.split("/")[0] for line in checked.stdout.splitlines()}
    assert sorted(set(names) - ignored) == []
    kept = subprocess.run(["git", "check-ignore", "-q", "--no-index", "zoo/cli/__init__.py"], cwd=REPO, check=False)
    assert kept.returncode == 1


def test_readme_lists_the_architectures_the_family_test_runs():
    from tests.loaders.test_families import FAMILIES

    text = (REPO / "README.md").read_text()
    table = text.split("### Supported architectures", 1)[1].split("\n\n")[2]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip(" `") for line in table.splitlines()[2:]}
    assert rows == {family: config for family, (config, _) in FAMILIES.items()}


def project_table() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements(*, extras: bool) -> list:
    """pyproject's dependencies, and with `extras` those of every extra too, as packaging Requirements."""
    from packaging.requirements import Requirement

    project = project_table()
    lines = list(project["dependencies"])
    if extras:
        lines += [line for extra in project.get("optional-dependencies", {}).values() for line in extra]
    return [Requirement(line) for line in lines]


def test_every_third_party_import_is_declared():
    """An import in zoo/, formats/, loaders/ or cards/ is of the standard library, of zoo, or of a distribution
    pyproject declares (a dependency or an extra's): zoo once imported httpx2 without declaring it."""
    import ast
    import importlib.metadata

    from packaging.utils import canonicalize_name

    declared = {canonicalize_name(r.name) for r in requirements(extras=True)}
    distributions = importlib.metadata.packages_distributions()  # import name -> the distributions providing it
    undeclared = []
    for layer in ("zoo", *LAYERS):
        for path in (REPO / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - {"zoo"}:
                    if not {canonicalize_name(d) for d in distributions.get(top, [])} & declared:
                        undeclared.append(f"{path.relative_to(REPO)}: {top}")
    assert undeclared == []


def test_transformers_is_capped_and_the_installed_dependencies_fit():
    """zoo reaches into transformers internals (zoo/loaders/compat.py, each tested), so pyproject caps transformers
    below its next major version; every installed dependency satisfies pyproject's specifier, so the tests run
    what pyproject allows."""
    import importlib.metadata

    from packaging.version import Version

    dependencies = {r.name.lower(): r for r in requirements(extras=False)}
    assert any(spec.operator == "<" for spec in dependencies["transformers"].specifier), "cap transformers"
    for requirement in dependencies.values():
        installed = Version(importlib.metadata.version(requirement.name))
        assert requirement.specifier.contains(installed, prereleases=True), (str(requirement), str(installed))


def test_lazy_packages_export_what_they_load():
    """zoo.formats and zoo.recipes load their names on first use (so the CLI starts without torch): their
    `__all__`, their name tables and what those names resolve to must not drift apart."""
    import zoo.formats

    import zoo.recipes

    # SPECS is loaded for __getattr__'s spec lookup (zoo.formats.IntSpec), not exported
    assert sorted(zoo.formats.__all__) == sorted(set(zoo.formats._FROM) - {"SPECS"})
    local = {"builtin_description", "builtin_names", "builtin_text"}
    assert sorted(zoo.recipes.__all__) == sorted({*zoo.recipes._FROM_RECIPE, *local})
    for package in (zoo.formats, zoo.recipes):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
