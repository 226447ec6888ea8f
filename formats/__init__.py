"""zoo's compact checkpoint format: codecs, manifest, reader and writer.

Pure: depends on torch, safetensors and pydantic only (never on transformers or the rest of zoo).
"""

if __name__ != "zoo.formats":  # the folder is on sys.path (a source tree's root): one name only, or classes exist twice
    raise ImportError(f"import zoo.formats, not {__name__}: this folder installs as zoo.formats (pip install -e .)")


from typing import Any

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
from .spec import SPECS, CodecSpec
from .writer import CheckpointWriter

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
    """Every codec's spec class, by name (IntSpec, NMSpec...): see zoo.formats.spec."""
    if name in SPECS:
        return SPECS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
