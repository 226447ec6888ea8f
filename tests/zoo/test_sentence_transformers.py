"""A compressed sentence-transformers model loads with SentenceTransformer(DIR) after `import zoo`: every
module folder that modules.json names travels with the weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from zoo.formats import FormatError, companion_files


def test_module_folders_named_by_modules_json_are_companions(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text("{}")
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "3_Stray").mkdir()
    (tmp_path / "3_Stray" / "a.txt").write_text("not named")
    (tmp_path / "vocab.txt").write_text("a")
    modules = [
        {"idx": 0, "path": "", "type": "T"},
        {"idx": 1, "path": "1_Pooling", "type": "P"},
        {"idx": 2, "path": "2_Dense", "type": "D"},
        {"idx": 3, "path": "4_Normalize", "type": "N"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert companion_files(tmp_path) == [
        "1_Pooling/config.json",
        "2_Dense/model.safetensors",
        "modules.json",
        "vocab.txt",
    ]


def test_a_module_folder_outside_the_model_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "modules.json").write_text(json.dumps([{"path": "../"}, {"path": "../elsewhere"}]))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FormatError, match="outside the model directory"):
        companion_files(tmp_path / "m")


@pytest.mark.slow
def test_sentence_transformers_loads_the_compressed_model(minilm_dir, compressed_models, tmp_path):
    from sentence_transformers import SentenceTransformer

    import zoo  # noqa: F401 - teaches transformers the zoo quantization method
    from zoo.tasks.fidelity import sample_texts

    path = compressed_models.path(minilm_dir, "int8")
    assert (path / "1_Pooling" / "config.json").read_bytes() == (minilm_dir / "1_Pooling" / "config.json").read_bytes()
    texts = sample_texts("fidelity.txt")
    dense = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts)
    model = SentenceTransformer(str(path), device="cpu")
    got = model.encode(texts)
    cosine = float((dense * got).sum(1).mean())  # both normalised by the model's Normalize module
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    assert 0.99 < cosine < 0.99999, cosine  # int8's fidelity: the compressed weights, not the dense ones
    # and it survives a copy elsewhere (nothing points back at the source)
    shutil.copytree(path, tmp_path / "copy")
    again = SentenceTransformer(str(tmp_path / "copy"), device="cpu").encode(texts[:4])
    assert np.allclose(again, got[:4], atol=1e-5)
