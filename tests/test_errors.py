"""zoo's errors: one module per layer, every one a ZooError (and the stdlib error it is a case of), importable
from zoo.errors and from where it is raised, carrying its module, path and hint; context is added by
`with_context`, which keeps the error's type."""

from __future__ import annotations

import ast
import importlib
import pickle

import pytest

from tests.conftest import REPO

ERROR_MODULES = {"zoo.formats.errors", "zoo.loaders.errors", "zoo.cards.errors", "zoo.errors"}

# where each error was imported from before the errors moved into one module per layer: they still are
IMPORTED_FROM = {
    "ModeError": ["zoo.loaders", "zoo.loaders.runtime", "zoo.loaders.quantizer"],
    "StructureError": ["zoo.loaders.structure"],
    "PlotUnavailable": ["zoo.cards", "zoo.cards.plot"],
    "TaskError": ["zoo.tasks", "zoo.tasks.base"],
    "ZooError": ["zoo.formats.errors"],
}

STDLIB_BASES = {
    "FormatError": ValueError,
    "ManifestError": ValueError,
    "ChecksumError": ValueError,
    "CodecError": ValueError,
    "PatternError": ValueError,
    "OutputExistsError": FileExistsError,
    "ModeError": ValueError,
    "StructureError": ValueError,
    "RecipeError": ValueError,
    "ModelNotFoundError": FileNotFoundError,
    "RegistryUnreachableError": ConnectionError,
}


def defined_exception_classes() -> list[tuple[str, str]]:
    """(module, class) of every class in zoo's code whose bases name an Error, Exception or Unavailable."""
    found = []
    for layer in ("zoo", "formats", "loaders", "cards"):
        for path in (REPO / layer).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            module = ".".join(("zoo",) * (layer != "zoo") + rel.parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text())):
                bases = [getattr(b, "id", None) or getattr(b, "attr", "") for b in getattr(node, "bases", [])]
                if isinstance(node, ast.ClassDef) and any(
                    b.endswith(("Error", "Exception", "Unavailable")) for b in bases
                ):
                    found.append((module, node.name))
    return found


def test_every_error_lives_in_its_layers_errors_module_under_zoo_error():
    from zoo.errors import ZooError

    not_errors = {
        ("zoo.methods.gptq", "_Stop"),  # control flow inside one function, never raised out of it
        ("zoo.console", "Terminated"),
    }  # SIGTERM, a BaseException like KeyboardInterrupt
    classes = [(m, c) for m, c in defined_exception_classes() if (m, c) not in not_errors]
    assert classes and {m for m, _ in classes} <= ERROR_MODULES, classes
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, ZooError), name
        assert getattr(importlib.import_module("zoo.errors"), name) is cls  # zoo.errors names every one


def test_errors_are_importable_from_where_they_were():
    import zoo.errors

    for name, modules in IMPORTED_FROM.items():
        for module in modules:
            assert getattr(importlib.import_module(module), name) is getattr(zoo.errors, name), (module, name)


def test_errors_subclass_the_stdlib_error_they_are_a_case_of():
    import zoo.errors

    for name, base in STDLIB_BASES.items():
        assert issubclass(getattr(zoo.errors, name), base), name
    with pytest.raises(ValueError):  # code written for the stdlib catches them
        from zoo.formats import read_config

        read_config(REPO / "no-such-directory")


def test_importing_zoo_errors_does_not_import_transformers():
    from tests.test_project import run_python

    loaded = run_python("import sys, zoo.errors; print('transformers' in sys.modules)")
    assert loaded == "False"


def test_with_context_keeps_the_type_and_fields_and_names_the_module():
    from zoo.formats.errors import PatternError

    err = PatternError("not 2:4 sparse", hint="use a dense recipe", path="/tmp/ckpt")
    got = err.with_context(module="encoder.layer.0.attention.self.query")
    assert type(got) is PatternError and got is not err
    assert str(got) == "module encoder.layer.0.attention.self.query: not 2:4 sparse"
    assert (got.module, got.path) == ("encoder.layer.0.attention.self.query", "/tmp/ckpt")
    assert got.hint == "use a dense recipe"
    assert (str(err), err.module) == ("not 2:4 sparse", None)  # the original is unchanged
    assert str(err.with_context(path="ckpt", hint="other")) == "ckpt: not 2:4 sparse"
    again = pickle.loads(pickle.dumps(got))  # worker processes send errors back pickled
    assert (type(again), str(again), again.module, again.path, again.hint) == (
        PatternError,
        str(got),
        got.module,
        got.path,
        got.hint,
    )


def test_errors_are_not_rebuilt_from_their_type():
    """`type(exc)(...)` lost every field but the message and hint; `exc.with_context(...)` keeps them."""
    offenders = []
    for layer in ("zoo", "formats", "loaders", "cards"):
        for path in (REPO / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                call = node.exc if isinstance(node, ast.Raise) else None
                rebuilt = isinstance(call, ast.Call) and isinstance(call.func, ast.Call)
                if rebuilt and getattr(call.func.func, "id", "") == "type":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_a_codec_error_names_the_module_it_was_raised_for():
    """compress adds the module to a codec's error (with_context): its type and hint survive."""
    import torch
    from zoo.formats.errors import PatternError
    from zoo.formats.manifest import ModuleEntry
    from zoo.formats.spec import NMSpec

    from zoo.compress import _encode

    entry = ModuleEntry(
        kind="linear", encoder_linear=True, shape=[4, 8], dtype="float32", codec=NMSpec(n=2, m=4), nbytes=0
    )
    with pytest.raises(PatternError, match=r"^module encoder\.layer\.0\.output\.dense: ") as caught:
        _encode(torch.ones(4, 8), "encoder.layer.0.output.dense", entry, pack=True)  # dense: not 2:4 sparse
    assert caught.value.module == "encoder.layer.0.output.dense"
