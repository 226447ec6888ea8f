"""zoo: a model zoo and checkpoint registry for deeply compressed transformers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zoo-compress")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from .errors import ZooError  # noqa: E402

__all__ = ["ZooError", "__version__"]
