"""Tasks read real files, refuse bad ones with one clear line, and score models honestly."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from tests.conftest import DATA
from zoo.tasks import TaskError, get_task
from zoo.tasks.image import read_idx

RT = DATA / "rotten_tomatoes"


def test_rotten_tomatoes_local_files():
    task = get_task("rotten_tomatoes", str(RT))
    sizes = {s: len(task.examples(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 10352, "validation": 1200, "test": 1200}
    assert task.label_names == ["0", "1"] and set(task.examples("test").labels) == {0, 1}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_text_files_with_named_columns_and_string_labels(tmp_path, suffix):
    rows = [{"review": f"text {i}", "stars": ["bad", "good", "ok"][i % 3]} for i in range(9)]
    for split in ("train", "dev", "test"):
        path = tmp_path / f"{split}{suffix}"
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            sep = "," if suffix == ".csv" else "\t"
            path.write_text("review" + sep + "stars\n" + "".join(f"{r['review']}{sep}{r['stars']}\n" for r in rows))
    task = get_task("text-classification", str(tmp_path), text_column="review", label_column="stars")
    ex = task.examples("validation")  # dev.* counts as validation
    assert task.label_names == ["bad", "good", "ok"] and ex.labels[:3] == [0, 1, 2] and ex.inputs[0] == "text 0"


def test_subset_is_seeded_and_sized():
    task = get_task("rotten_tomatoes", str(RT))
    a, b = task.examples("train").subset(50), task.examples("train").subset(50)
    assert len(a) == 50 and a.inputs == b.inputs


@pytest.mark.parametrize(
    ("files", "kwargs", "message"),
    [
        ({}, {}, "has no train file"),
        ({"train.tsv": "sentence\tlabel\nhi\t0\n"}, {"text_column": "body"}, "no text column 'body'"),
        ({"train.tsv": "words\tlabel\nhi\t0\n"}, {}, "cannot tell which column holds the text"),
        ({"train.tsv": "sentence\tlabel\nhi\t1\nyo\t2\n"}, {}, "integer labels must be 0..N-1"),
    ],
)
def test_bad_text_data_is_a_task_error(tmp_path, files, kwargs, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(TaskError, match=message):
        get_task("text-classification", str(tmp_path), **kwargs).examples("train")


def test_unknown_task_and_split():
    with pytest.raises(TaskError, match="unknown task 'sentiment'"):
        get_task("sentiment", str(RT))
    with pytest.raises(TaskError, match="unknown split 'dev'"):
        get_task("rotten_tomatoes", str(RT)).examples("dev")


def test_hub_dataset_offline_fails_with_one_clear_line():
    pytest.importorskip("datasets")
    task = get_task("rotten_tomatoes")  # no --data: the Hugging Face dataset, unreachable offline
    with pytest.raises(TaskError, match="cannot load dataset 'cornell-movie-review-data/rotten_tomatoes'") as info:
        task.examples("train")
    assert "--data" in info.value.hint


def _idx(path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_image_task_splits_train_and_resizes(tmp_path):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40) % 10)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 10)
    task = get_task("image-classification", str(tmp_path))
    assert [len(task.examples(s)) for s in ("train", "validation", "test")] == [36, 4, 10]
    assert task.label_names[0] == "T-shirt/top"  # ten classes: Fashion-MNIST's names
    from zoo.tasks.image import to_pixels

    pixels = to_pixels(task.examples("test").inputs, 3, 32)
    assert pixels.shape == (10, 3, 32, 32) and float(pixels.min()) >= -1 and float(pixels.max()) <= 1
    assert torch.equal(torch.from_numpy(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").copy()), torch.arange(10) % 10)


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 100) + b"\x00" * 10)
    with pytest.raises(TaskError, match="header says"):
        read_idx(path)


def test_fidelity_of_a_model_with_itself_is_perfect(tiny_bert_dir):
    from transformers import AutoModel

    from zoo.tasks.fidelity import embedding_cosine, head_fidelity, sample_texts, text_batch

    assert embedding_cosine(tiny_bert_dir, tiny_bert_dir, sample_texts()[:8]) == pytest.approx(1.0, abs=1e-5)
    model = AutoModel.from_pretrained(tiny_bert_dir)
    assert head_fidelity(model, model, text_batch(tiny_bert_dir, sample_texts()[:8])) == {}  # no head, no head metrics


def test_run_eval_reports_fidelity_as_a_typed_result(tiny_bert_dir):
    """`zoo eval --task fidelity` without the CLI: an EvalReport, printed as JSON without a token length."""
    from zoo.tasks.evaluation import EvalReport, run_eval

    report = run_eval(tiny_bert_dir, "fidelity", reference=str(tiny_bert_dir), limit=4)
    assert isinstance(report, EvalReport) and (report.split, report.n_examples, report.max_length) == (
        "samples",
        4,
        None,
    )
    assert report.metrics == {"cosine": pytest.approx(1.0, abs=1e-5)}  # no head: no agreement or KL
    shown = report.to_json()
    assert list(shown) == ["model", "task", "dataset", "split", "n_examples", "metrics"]
    scored = EvalReport("m", "rotten_tomatoes", "rotten_tomatoes", "test", 8, {"accuracy": 0.5}, max_length=64)
    assert list(scored.to_json()) == ["model", "task", "dataset", "split", "n_examples", "max_length", "metrics"]


def test_image_folder_per_class(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls, value in (("cat", 30), ("dog", 220)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 10), (value, value, value)).save(tmp_path / split / cls / f"{i}.png")
    task = get_task("image-classification", str(tmp_path))
    ex = task.examples("test")
    assert task.label_names == ["cat", "dog"] and ex.labels == [0, 0, 0, 1, 1, 1]
    assert ex.inputs.shape == (6, 3, 10, 12) and int(ex.inputs[3].min()) == 220
