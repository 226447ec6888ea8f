"""`import zoo` makes transformers understand `quant_method: "zoo"` without importing transformers
itself (that would add two seconds to every CLI command): if transformers is already loaded the
method is registered now, otherwise right after transformers is first imported."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def _register() -> None:
    import zoo.loaders  # noqa: F401 - importing zoo.loaders registers the quantizer with transformers


class _Loader(importlib.abc.Loader):
    """transformers' own loader, followed by zoo's registration."""

    def __init__(self, wrapped):
        self._wrapped = wrapped

    def create_module(self, spec):
        return self._wrapped.create_module(spec)

    def exec_module(self, module) -> None:
        self._wrapped.exec_module(module)
        _register()

    def __getattr__(self, name):
        return getattr(self._wrapped, name)


class _AfterTransformers(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot: let the regular finders locate transformers
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def register_with_transformers() -> None:
    if "transformers" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformers())
