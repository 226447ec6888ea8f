"""zoo's compact checkpoint format: codecs, manifest, reader and writer.

Pure: depends on torch, safetensors and pydantic only (never on transformers or the rest of zoo).
"""

if __name__ != "zoo.formats":  # the folder is on sys.path (a source tree's root): one name only, or classes exist twice
    raise ImportError(f"import zoo.formats, not {__name__}: this folder installs as zoo.formats (pip install -e .)")


import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import codecs
    from .errors import ChecksumError, CodecError, FormatError, ManifestError, OutputExistsError, PatternError, ZooError
    from .fit import check_fits
    from .manifest import (
        FIDELITY_FLOOR,
        FORMAT_VERSION,
        BaseModelInfo,
        EvalResult,
        FidelityRecord,
        FileInfo,
        Manifest,
        ModuleEntry,
        RecipeRecord,
        SizeReport,
        Structure,
        TrainingRecord,
        module_entry,
        shard_metadata,
    )
    from .reader import Checkpoint, read_config, tensor_name
    from .safetensors_dir import SafetensorsDir, companion_files
    from .spec import CodecSpec
    from .writer import CheckpointWriter

# Each name above, by the module that defines it: loaded on first use (PEP 562), so that importing a light part
# of the format (zoo.formats.errors, which every zoo module imports) does not import torch with the codecs.
_NAMES = {
    "codecs": ("codecs",),
    "errors": (
        "ChecksumError",
        "CodecError",
        "FormatError",
        "ManifestError",
        "OutputExistsError",
        "PatternError",
        "ZooError",
    ),
    "fit": ("check_fits",),
    "manifest": (
        "FIDELITY_FLOOR",
        "FORMAT_VERSION",
        "BaseModelInfo",
        "EvalResult",
        "FidelityRecord",
        "FileInfo",
        "Manifest",
        "ModuleEntry",
        "RecipeRecord",
        "SizeReport",
        "Structure",
        "TrainingRecord",
        "module_entry",
        "shard_metadata",
    ),
    "reader": ("Checkpoint", "read_config", "tensor_name"),
    "safetensors_dir": ("SafetensorsDir", "companion_files"),
    "spec": ("SPECS", "CodecSpec"),
    "writer": ("CheckpointWriter",),
}
_FROM = {name: module for module, names in _NAMES.items() for name in names}

__all__ = [
    "FIDELITY_FLOOR",
    "FORMAT_VERSION",
    "BaseModelInfo",
    "Checkpoint",
    "CheckpointWriter",
    "ChecksumError",
    "CodecError",
    "CodecSpec",
    "EvalResult",
    "FidelityRecord",
    "FileInfo",
    "FormatError",
    "Manifest",
    "ManifestError",
    "ModuleEntry",
    "OutputExistsError",
    "PatternError",
    "RecipeRecord",
    "SafetensorsDir",
    "SizeReport",
    "Structure",
    "TrainingRecord",
    "ZooError",
    "check_fits",
    "codecs",
    "companion_files",
    "module_entry",
    "read_config",
    "shard_metadata",
    "tensor_name",
]


def __getattr__(name: str) -> Any:
    """The names above, and every codec's spec class by name (IntSpec, NMSpec...: see zoo.formats.spec)."""
    if name in _FROM:
        module = importlib.import_module(f"{__name__}.{_FROM[name]}")
        value = module if name == _FROM[name] else getattr(module, name)
    else:
        value = None if name.startswith("_") else importlib.import_module(f"{__name__}.spec").SPECS.get(name)
        if value is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
