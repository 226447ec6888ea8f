"""Text classification from local TSV/CSV/JSONL files or a Hugging Face `datasets` name.

A data directory holds one file per split: `train`, `validation` (or `dev`/`valid`), `test`, each
`.tsv`, `.csv` or `.jsonl`, with a text column and an integer (or string) label column. When the
columns are not named, `sentence`/`text` and `label` are tried."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

from .base import Examples, TaskError, check_split

SPLIT_FILES = {"train": ["train"], "validation": ["validation", "dev", "valid", "val"], "test": ["test"]}
SUFFIXES = (".tsv", ".csv", ".jsonl")
TEXT_COLUMNS = ("sentence", "text", "review", "content")
LABEL_COLUMNS = ("label", "labels")
DEFAULT_MAX_LENGTH = 64  # tokens per text example where nothing else says: the one default


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
    given_name: str | None = None  # --task-name: what the results are recorded under
    given_labels: list[str] | None = None  # --label-names: names of integer labels 0..N-1 (or the order of strings)
    _values: list[str] = field(default_factory=list, repr=False)  # the labels as the files write them
    _loaded: dict = field(default_factory=dict, repr=False)

    @cached_property
    def dataset(self) -> str:
        """The name results are recorded under: --task-name, else a dataset card's `pretty_name` beside the files,
        else the folder's name (its parent's, when the folder is called something like `data`), else the hub id."""
        if self.given_name:
            return self.given_name
        root = Path(self.source)
        if not root.is_dir():
            return self.source
        return _card_name(root) or (
            root.resolve().parent.name if root.resolve().name.lower() in _GENERIC else root.name
        )

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
            self._values = _label_names(raw, where)
            self.label_names = _display_names(self._values, self.given_labels or _labels_file(self.source), where)
            if not all(v.isdigit() for v in self._values) and self.label_names != self._values:
                self._values = list(self.label_names)  # string labels in the order the names give
        else:
            self.examples("train")  # the label vocabulary comes from train
        index = {value: i for i, value in enumerate(self._values)}
        try:
            labels = [index[str(v)] for v in raw]
        except KeyError as exc:
            raise TaskError(f"{where}: label {exc.args[0]!r} does not occur in the train split") from None
        return Examples(texts, labels)

    def name_labels_from(self, model_dir) -> None:
        """Integer labels with no names given take the names of a fine-tuned model's head (its id2label), so a
        student distilled from a teacher keeps the teacher's label names."""
        self.examples("train")
        if self.given_labels is not None or not all(v.isdigit() for v in self._values):
            return
        try:
            id2label = json.loads((Path(model_dir) / "config.json").read_text()).get("id2label") or {}
        except (OSError, ValueError):
            return
        names = [str(id2label.get(str(i), id2label.get(i, ""))) for i in range(len(self._values))]
        if (
            len(id2label) == len(self._values)
            and all(names)
            and names != self._values
            and len(set(names)) == len(names)
        ):
            self.label_names = names

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


_GENERIC = {"data", "dataset", "datasets", "input", "inputs", "files", "raw", "processed", "splits", "tsv", "csv"}


def _card_name(root: Path) -> str | None:
    """`pretty_name` from a dataset card (README.md) beside the split files, read with huggingface_hub."""
    if not (root / "README.md").is_file():
        return None
    from huggingface_hub import DatasetCard

    try:
        name = DatasetCard.load(root / "README.md").data.to_dict().get("pretty_name")
    except (ValueError, OSError):
        return None
    return (str(name).strip() or None) if name else None


def _labels_file(source: str) -> list[str] | None:
    """labels.txt beside the split files: one label name per line, for integer labels 0..N-1 in order."""
    path = Path(source) / "labels.txt"
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"cannot read {path}: {exc}") from None
    return names or None


def _display_names(values: list[str], given: list[str] | None, where: str) -> list[str]:
    """The names of the labels: for integer labels 0..N-1, `given` (--label-names or labels.txt) when there is
    one, else the integers; string labels are their own names, and `given` may only reorder them."""
    if given is None:
        return values
    if all(v.isdigit() for v in values):
        if len(given) != len(values) or len(set(given)) != len(given):
            raise TaskError(
                f"{len(given)} label names ({', '.join(given)}) for the {len(values)} labels 0..{len(values) - 1} "
                f"of {where}",
                hint="give one distinct name per label, in the order of their numbers",
            )
        return list(given)
    if sorted(given) != sorted(values):
        raise TaskError(
            f"label names {', '.join(given)} are not the labels of {where} ({', '.join(values)})",
            hint="string labels are their own names; --label-names may only give their order",
        )
    return list(given)


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
            hint="copy the tokenizer files (tokenizer.json or vocab.txt, tokenizer_config.json) "
            "of the model's source beside its weights",
        )
    return tokenizer


@cache
def _tokenizer(model_dir: str):
    return load_tokenizer(model_dir)


def _hub_split(name: str, split: str) -> tuple[list[dict], list[str]]:
    """A split of a Hugging Face dataset through `datasets` (downloads, or reads its cache)."""
    try:
        import datasets  # type: ignore[import-untyped]  # datasets ships no py.typed marker
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
