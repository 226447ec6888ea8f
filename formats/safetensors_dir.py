"""The safetensors weight files of a checkpoint directory: one `model.safetensors`, or shards
listed by `model.safetensors.index.json` (the Hugging Face convention). Tensors are read lazily
through safetensors' memory-mapped handles; pickle files are never read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import FormatError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# the top-level files that travel with the weights, by purpose; anything else in a model's folder (desktop.ini,
# notes, training logs, other frameworks' weights) stays behind
_COMPANIONS = {
    # tokenizers: fast, WordPiece, BPE, SentencePiece (T5, Marian's source/target), chat templates
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "source.spm",
    "target.spm",
    "chat_template.json",
    "chat_template.jinja",
    # image, audio and multimodal processors
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "video_preprocessor_config.json",
    # generation defaults; sentence-transformers' module list and settings
    "generation_config.json",
    "modules.json",
    "config_sentence_transformers.json",
}


def _is_companion(name: str) -> bool:
    upper = name.upper()
    return (
        name in _COMPANIONS
        or (name.startswith("sentence_") and name.endswith("_config.json"))  # sentence_bert_config.json...
        or upper.startswith(("LICENSE", "LICENCE", "NOTICE", "COPYING"))
    )  # the terms travel with the model


def companion_files(directory: Path) -> list[str]:
    """Files that travel with the weights, as POSIX paths relative to `directory`, chosen by purpose: the
    tokenizer, processor, generation config, licence and sentence-transformers settings at the top level, and
    every file of the module folders that modules.json names (1_Pooling/, 2_Dense/...), so SentenceTransformer(DIR)
    loads the output as it did the source. A module folder is copied whole, weights included: zoo compresses the
    transformer only. config.json, the weights and the card are written anew; nothing else is copied."""
    directory = Path(directory)
    names = [p.name for p in directory.iterdir() if p.is_file() and _is_companion(p.name)]  # a hub cache links files
    for folder in module_folders(directory):
        for p in folder.rglob("*"):
            rel = p.relative_to(directory.resolve())
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                names.append(rel.as_posix())
    return sorted(names)


def module_folders(directory: Path) -> list[Path]:
    """The existing folders that modules.json (sentence-transformers) names, inside `directory` only."""
    path = Path(directory) / "modules.json"
    if not path.is_file():
        return []
    try:
        modules = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from None
    root = Path(directory).resolve()
    folders = []
    for module in modules if isinstance(modules, list) else []:
        rel = module.get("path") if isinstance(module, dict) else None
        if not isinstance(rel, str) or not rel.strip("./"):
            continue  # "" is the transformer itself: the directory
        folder = (root / rel).resolve()
        if root not in folder.parents:
            raise FormatError(f"{path} names module folder {rel!r}, outside the model directory")
        if folder.is_dir():
            folders.append(folder)
    return sorted(set(folders))


# safetensors dtype codes -> torch dtype names (the float ones are the only ones codecs take)
DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class SafetensorsDir:
    """Headers stay open (cheap metadata lookups); tensor data is read on demand."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._handles: dict[str, safe_open] = {}
        self.weight_map = self._weight_map()
        keys = {file: set(self._open(file).keys()) for file in self.files}
        for name, file in self.weight_map.items():
            if name not in keys[file]:
                raise FormatError(f"{INDEX_FILE} places '{name}' in {file}, which does not hold it")

    def _weight_map(self) -> dict[str, str]:
        d = self.directory
        if (d / INDEX_FILE).is_file():
            try:
                index = json.loads((d / INDEX_FILE).read_text(encoding="utf-8"))
                weight_map = dict(index["weight_map"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
                raise FormatError(f"{d / INDEX_FILE} is not a valid safetensors index: {type(exc).__name__}") from None
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
                raise FormatError(f"{d / INDEX_FILE}: its weight_map must map tensor names to file names")
            for file in set(weight_map.values()):
                if Path(file).name != file or len(file) > 255:
                    raise FormatError(f"{INDEX_FILE} names a file outside the checkpoint: {file!r}")
            return weight_map
        if (d / SINGLE_FILE).is_file():
            return {name: SINGLE_FILE for name in self._open(SINGLE_FILE).keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
        hint = None
        if any((d / p).exists() for p in PICKLE_FILES):
            hint = (
                "zoo reads only safetensors (never pickle); convert with transformers: "
                "save_pretrained(..., safe_serialization=True)"
            )
        raise FormatError(f"no {SINGLE_FILE} or {INDEX_FILE} in {d}", hint=hint)

    def _open(self, file: str) -> safe_open:
        if file in self._handles:
            return self._handles[file]
        path = self.directory / file
        try:
            present = path.is_file()
        except OSError as exc:
            raise FormatError(f"weight file {file[:80]!r} cannot be opened: {exc.strerror}") from None
        if not present:
            raise FormatError(f"weight file {file} is missing from {self.directory}")
        try:
            self._handles[file] = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as exc:
            raise FormatError(
                f"{path} is not a valid safetensors file ({exc})",
                hint="the file is truncated or corrupt; download or write it again",
            ) from None
        return self._handles[file]

    @property
    def files(self) -> list[str]:
        return sorted(set(self.weight_map.values()))

    def names(self) -> list[str]:
        return list(self.weight_map)

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self.weight_map[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        code = self._handles[self.weight_map[name]].get_slice(name).get_dtype()
        return DTYPE_NAMES.get(code, code)

    def numel(self, name: str) -> int:
        return math.prod(self.shape(name))

    def nbytes(self, name: str) -> int:
        return self.numel(name) * getattr(torch, self.dtype(name)).itemsize

    def get(self, name: str) -> torch.Tensor:
        """A copy of the tensor, read through a short-lived memory map: the pages it touched are
        unmapped at once, so streaming a whole checkpoint does not keep it resident."""
        file = self.weight_map[name]
        try:
            with safe_open(str(self.directory / file), framework="pt") as handle:
                return handle.get_tensor(name)
        except SafetensorError as exc:
            raise FormatError(f"cannot read tensor '{name}' from {file}: {exc}") from None

    def metadata(self, file: str) -> dict[str, str]:
        return self._handles[file].metadata() or {}

    def file_nbytes(self) -> int:
        return sum((self.directory / f).stat().st_size for f in self.files)
