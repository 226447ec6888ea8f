"""The project's own promises: CI runs README's test command; imports point one way only."""

from __future__ import annotations

import re
import subprocess
import sys

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


def test_formats_does_not_import_transformers_or_upper_packages():
    loaded = run_python(
        "import sys, formats, formats.codecs, formats.reader, formats.writer, formats.fit;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers','zoo','cards','loaders')))"
    )
    assert loaded == "[]"


def test_loaders_does_not_import_zoo_or_cards():
    loaded = run_python("import sys, loaders; print(sorted(m for m in sys.modules if m.split('.')[0] in ('zoo','cards')))")
    assert loaded == "[]"


def test_import_statements_point_down_only():
    allowed = {"formats": set(), "loaders": {"formats"}, "cards": {"formats", "loaders"}, "zoo": {"formats", "loaders", "cards"}}
    pattern = re.compile(r"^\s*(?:from|import)\s+(formats|loaders|cards|zoo)\b", re.MULTILINE)
    for package, may_import in allowed.items():
        for path in (REPO / package).rglob("*.py"):
            for target in pattern.findall(path.read_text()):
                assert target == package or target in may_import, f"{path} imports {target}"
