"""Opening a zoo checkpoint: every check runs before anything is decoded.

Order of checks, each with its own message:
 1. config.json parses and holds a valid manifest of a supported format_version;
 2. every weight file's safetensors header parses (truncated or corrupt files fail here);
 3. every module's tensors exist with the shapes and dtypes its codec's layout gives, and their
    bytes add up to the recorded count; the dense weight they replace is absent;
 4. every shard that carries zoo metadata names this manifest (format version and manifest
    sha256), which catches any other edit of the manifest's modules (shards re-saved by
    transformers' save_pretrained carry only {"format": "pt"});
 5. (verify=True) every file the manifest lists exists with its recorded size and sha256, and no
    weight file is unlisted (a manifest re-saved by transformers lists no files: nothing to check).
Tensors are read lazily through memory-mapped safetensors handles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from . import codecs
from .codecs.base import DTYPES
from .errors import ChecksumError, CodecError, FormatError, ManifestError
from .manifest import FORMAT_VERSION, META_FORMAT_VERSION, META_MANIFEST_SHA256, Manifest, ModuleEntry, config_digest
from .safetensors_dir import SafetensorsDir
from .writer import header_sha256, sha256_file

CONFIG_FILE = "config.json"


def read_config(directory: Path) -> dict:
    """config.json of a model directory, as a dict; a FormatError (naming its path) when it is absent or not a
    JSON object."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FormatError(f"no {CONFIG_FILE} in {directory}", hint="point at a model directory", path=path)
    return read_config_file(path)


def read_config_file(path: Path) -> dict:
    """A config.json file (wherever it lies: a model directory, transformers' hub cache), as a dict."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}", path=path) from None
    except RecursionError:
        raise FormatError(f"{path} nests its JSON too deeply to be a model's config", path=path) from None
    if not isinstance(config, dict):
        raise FormatError(f"{path} does not hold a JSON object", path=path)
    return config


def tensor_name(module: str, key: str) -> str:
    return f"{module}.weight_{key}"


class Checkpoint:
    def __init__(self, path: Path, config: dict, manifest: Manifest, weights: SafetensorsDir):
        self.path = path
        self.config = config
        self.manifest = manifest
        self.weights = weights

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> Checkpoint:
        path = Path(path)
        if not path.is_dir():
            raise FormatError(f"{path} is not a directory", path=path)
        config = read_config(path)
        manifest = Manifest.from_quantization_config(config.get("quantization_config"), where=str(path / CONFIG_FILE))
        weights = SafetensorsDir(path)
        ckpt = cls(path, config, manifest, weights)
        ckpt._check_modules()
        ckpt._check_metadata()
        ckpt.check_sizes()
        if verify:
            ckpt.verify_files()
        return ckpt

    def check_sizes(self) -> None:
        """The cheap half of verification, done on every open: the manifest lists every weight file; every file
        it lists is there with the size it recorded; each weight file's header and config.json's settings hash as
        recorded. (verify_files hashes every byte too.) A model re-saved by transformers records no files: none of
        this applies to it."""
        recorded = self.manifest.files
        if not recorded:
            return
        if self.manifest.config_sha256 is not None and config_digest(self.config) != self.manifest.config_sha256:
            raise ChecksumError(
                "config.json's settings changed after the checkpoint was written (its sha256 does not "
                "match the manifest's)",
                hint="restore config.json (pull or compress the model again)",
            )
        for file, want in self.manifest.headers_sha256.items():
            if file in self.weights.files and header_sha256(self.path / file) != want:
                raise ChecksumError(
                    f"the safetensors header of {file} changed after it was written",
                    hint="download or produce the checkpoint again",
                )
        for file in self.weights.files:
            if file not in recorded:
                raise ChecksumError(f"weight file {file} is not listed in the manifest")
        for name, info in recorded.items():
            if Path(name).is_absolute() or ".." in Path(name).parts or "\\" in name:
                raise ManifestError(f"the manifest lists {name!r}, a path outside the checkpoint directory")
            path = self.path / name
            if not path.is_file():
                raise ChecksumError(f"{name} listed in the manifest is missing from {self.path}")
            if path.stat().st_size != info.nbytes:
                raise ChecksumError(
                    f"{name} is {path.stat().st_size:,} bytes, the manifest recorded {info.nbytes:,}: "
                    "the file changed after it was written",
                    hint="download or produce the checkpoint again",
                )

    def _check_metadata(self) -> None:
        want = self.manifest.content_sha256()
        for file in self.weights.files:
            meta = self.weights.metadata(file)
            if META_FORMAT_VERSION not in meta and META_MANIFEST_SHA256 not in meta:
                continue
            if meta.get(META_FORMAT_VERSION) != str(FORMAT_VERSION):
                raise FormatError(
                    f"{file}: metadata format version {meta.get(META_FORMAT_VERSION)!r}, manifest says {FORMAT_VERSION}"
                )
            if meta.get(META_MANIFEST_SHA256) != want:
                raise FormatError(
                    f"{file} was written for a different manifest (metadata sha256 does not match config.json)",
                    hint="the checkpoint's files were modified or mixed from different runs",
                )

    def _check_modules(self) -> None:
        for module, entry in self.manifest.modules.items():
            try:
                expected = codecs.layout(tuple(entry.shape), entry.codec)
            except CodecError as exc:
                raise ManifestError(f"module {module}: {exc}", module=module) from None
            total = 0
            for key, want in expected.items():
                name = tensor_name(module, key)
                if name not in self.weights:
                    raise FormatError(
                        f"module {module}: tensor '{name}' named by the manifest is missing", module=module
                    )
                shape, dtype = self.weights.shape(name), self.weights.dtype(name)
                if shape != want.shape or dtype != str(want.dtype).removeprefix("torch."):
                    raise FormatError(
                        f"module {module}: tensor '{name}' is {list(shape)} {dtype}, "
                        f"the manifest's codec ({entry.codec.describe()}) needs {list(want.shape)} "
                        f"{str(want.dtype).removeprefix('torch.')}"
                    )
                total += want.nbytes
            if total != entry.nbytes:
                raise ManifestError(
                    f"module {module}: manifest records {entry.nbytes} bytes, its tensors hold {total}", module=module
                )
            if f"{module}.weight" in self.weights:
                raise FormatError(f"module {module} is compressed but its dense weight is also present", module=module)

    def verify_files(self) -> None:
        self.check_sizes()
        for name, info in self.manifest.files.items():
            path = self.path / name
            if sha256_file(path) != info.sha256:
                raise ChecksumError(
                    f"{name} does not match its recorded sha256: the file changed after it was written",
                    hint="download or produce the checkpoint again",
                )

    # -- reading ----------------------------------------------------------------------------
    def module_tensors(self, module: str) -> dict[str, torch.Tensor]:
        entry = self.manifest.modules[module]
        keys = codecs.layout(tuple(entry.shape), entry.codec)
        return {key: self.weights.get(tensor_name(module, key)) for key in keys}

    def decode(self, module: str) -> torch.Tensor:
        """The module's weight as float32, decoded from its stored tensors."""
        entry: ModuleEntry = self.manifest.modules[module]
        try:
            return codecs.decode_checked(self.module_tensors(module), entry.codec, tuple(entry.shape))
        except CodecError as exc:
            raise FormatError(f"module {module}: {exc}", module=module) from None

    def stored_owners(self) -> dict[str, str]:
        """Stored tensor name -> the compressed module it belongs to."""
        return {
            tensor_name(module, key): module
            for module, entry in self.manifest.modules.items()
            for key in codecs.layout(tuple(entry.shape), entry.codec)
        }

    def dense_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of the dense model: plain tensors as stored, modules decoded to their
        original dtype, in checkpoint order."""
        owners = self.stored_owners()
        emitted: set[str] = set()
        for name in self.weights.names():
            module = owners.get(name)
            if module is None:
                yield name, self.weights.get(name)
            elif module not in emitted:
                emitted.add(module)
                dtype = DTYPES[self.manifest.modules[module].dtype]
                yield f"{module}.weight", self.decode(module).to(dtype)
