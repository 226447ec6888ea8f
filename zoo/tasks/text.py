"""Text classification from local TSV/CSV/JSONL files or a Hugging Face `datasets` name.

A data directory holds one file per split: `train`, `validation` (or `dev`/`valid`), `test`, each
`.tsv`, `.csv` or `.jsonl`, with a text column and an integer (or string) label column. When the
columns are not named, `sentence`/`text` and `label` are tried."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .base import Examples, TaskError, check_split

SPLIT_FILES = {"train": ["train"], "validation": ["validation", "dev", "valid", "val"], "test": ["test"]}
SUFFIXES = (".tsv", ".csv", ".jsonl")
TEXT_COLUMNS = ("sentence", "text", "review", "content")
LABEL_COLUMNS = ("label", "labels")
DEFAULT_MAX_LENGTH = 128


def _rows(path: Path) -> list[dict]:
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        with path.open(newline="", encoding="utf-8") as f:
            dialect = "excel-tab" if path.suffix == ".tsv" else "excel"
            return list(csv.DictReader(f, dialect=dialect))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise TaskError(f"cannot read {path}: {exc}") from None


def _pick(columns, wanted: str | None, candidates, what: str, where) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise TaskError(f"{where} has no {what} column {wanted!r}; it has {', '.join(map(str, columns))}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise TaskError(
        f"{where}: cannot tell which column holds the {what} (columns: {', '.join(map(str, columns))})",
        hint=f"name it with --{what}-column",
    )


@dataclass
class TextClassification:
    """Sentence -> label. `source` is a directory of split files or a `datasets` name."""

    name: str
    source: str
    text_column: str | None = None
    label_column: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    auto_task: str = "text-classification"
    label_names: list[str] = field(default_factory=list)
    _loaded: dict = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> str:
        return Path(self.source).name if Path(self.source).is_dir() else self.source

    @property
    def num_labels(self) -> int:
        self.examples("train")
        return len(self.label_names)

    def _file(self, split: str) -> Path:
        root = Path(self.source)
        for stem in SPLIT_FILES[split]:
            for suffix in SUFFIXES:
                if (root / f"{stem}{suffix}").is_file():
                    return root / f"{stem}{suffix}"
        raise TaskError(
            f"{root} has no {split} file",
            hint=f"expected one of {', '.join(s + x for s in SPLIT_FILES[split] for x in SUFFIXES)}",
        )

    def _raw(self, split: str) -> tuple[list, list, str]:
        if Path(self.source).is_dir():
            path = self._file(split)
            rows = _rows(path)
            if not rows:
                raise TaskError(f"{path} holds no examples")
            return rows, list(rows[0].keys()), str(path)
        return (*_hub_split(self.source, split), f"dataset {self.source} ({split})")

    def examples(self, split: str) -> Examples:
        if split not in self._loaded:
            self._loaded[split] = self._load(check_split(split))
        return self._loaded[split]

    def texts(self, split: str) -> list[str]:
        """The split's texts alone (calibration needs no labels, so none are read)."""
        rows, columns, where = self._raw(split)
        return [str(r[_pick(columns, self.text_column, TEXT_COLUMNS, "text", where)]) for r in rows]

    def _load(self, split: str) -> Examples:
        rows, columns, where = self._raw(split)
        text_col = _pick(columns, self.text_column, TEXT_COLUMNS, "text", where)
        label_col = _pick(columns, self.label_column, LABEL_COLUMNS, "label", where)
        texts = [str(r[text_col]) for r in rows]
        raw = [r[label_col] for r in rows]
        if split == "train":
            self.label_names = _label_names(raw, where)
        else:
            self.examples("train")  # the label vocabulary comes from train
        index = {name: i for i, name in enumerate(self.label_names)}
        try:
            labels = [index[str(v)] for v in raw]
        except KeyError as exc:
            raise TaskError(f"{where}: label {exc.args[0]!r} does not occur in the train split") from None
        return Examples(texts, labels)

    def collator(self, model_dir):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(_tokenizer(str(model_dir)))

    def features(self, split: str, model_dir, *, limit: int | None = None, max_length: int | None = None) -> list[dict]:
        ex = self.examples(split).subset(limit)
        enc = _tokenizer(str(model_dir))(list(ex.inputs), truncation=True, max_length=max_length or self.max_length)
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": label}
            for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], ex.labels)
        ]


def _label_names(raw: list, where: str) -> list[str]:
    """Label vocabulary: integer labels must be 0..N-1 (kept in that order); strings are sorted."""
    values = {str(v) for v in raw}
    if all(v.isdigit() for v in values):
        ordered = sorted(values, key=int)
        if ordered != [str(i) for i in range(len(ordered))]:
            raise TaskError(f"{where}: integer labels must be 0..N-1, got {', '.join(ordered[:10])}")
        return ordered
    return sorted(values)


def load_tokenizer(model_dir: str | Path):
    """The model's own tokenizer. transformers builds an empty one (a handful of special tokens, every word
    unknown) for a directory whose tokenizer files are missing; that is refused like a missing one."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TaskError(f"{model_dir} has no usable tokenizer: {str(exc).splitlines()[0][:160]}") from None
    config = Path(model_dir) / "config.json"
    vocab = json.loads(config.read_text()).get("vocab_size") if config.is_file() else None
    if len(tokenizer) < (vocab // 2 if isinstance(vocab, int) else 100):
        raise TaskError(
            f"{model_dir} has no tokenizer of its own: transformers made an empty one ({len(tokenizer)} tokens"
            + (f" for a vocabulary of {vocab})" if isinstance(vocab, int) else ")"),
            hint="copy the tokenizer files (tokenizer.json or vocab.txt, tokenizer_config.json) of the model's source beside its weights",
        )
    return tokenizer


@cache
def _tokenizer(model_dir: str):
    return load_tokenizer(model_dir)


def _hub_split(name: str, split: str) -> tuple[list[dict], list[str]]:
    """A split of a Hugging Face dataset through `datasets` (downloads, or reads its cache)."""
    try:
        import datasets
    except ImportError:
        raise TaskError(
            f"{name!r} is not a directory, and loading it as a Hugging Face dataset needs `datasets`",
            hint="pip install 'zoo-compress[datasets]', or pass --data DIR with train/validation/test files",
        ) from None
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 (datasets raises many types: offline, missing, bad name)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TaskError(
            f"cannot load dataset {name!r} ({split}): {first}",
            hint="offline? pass --data DIR with local train/validation/test files",
        ) from None
    return [dict(r) for r in data], list(data.column_names)
