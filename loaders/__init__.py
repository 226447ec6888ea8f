"""Loading zoo checkpoints: the transformers quantization method "zoo" (registered when this
package is imported), runtime modules with three execution modes, and dense conversion.
Imports formats only, never zoo or cards."""

if __name__ != "zoo.loaders":  # the folder is on sys.path (a source tree's root): one name only, or classes exist twice
    raise ImportError(f"import zoo.loaders, not {__name__}: this folder installs as zoo.loaders (pip install -e .)")


from .auto import TASKS, load, quiet_transformers
from .quantizer import ZooConfig, ZooHfQuantizer, dense_module, register
from .runtime import DEFAULT_MODE, MODES, ModeError, ZooEmbedding, ZooLinear, ZooModule
from .unpack import unpack

register()

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "TASKS",
    "ModeError",
    "ZooConfig",
    "ZooEmbedding",
    "ZooHfQuantizer",
    "ZooLinear",
    "ZooModule",
    "dense_module",
    "load",
    "quiet_transformers",
    "register",
    "unpack",
]
