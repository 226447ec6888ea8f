"""How transformers learns the "zoo" quantization method: `import zoo` registers it without importing
transformers itself (lazily, when transformers is first imported), in either import order. And what
plain transformers does with a zoo checkpoint when nobody registered it: the reason README says to
`import zoo` first. Each case runs in a fresh interpreter, since registration is per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from zoo.formats import Checkpoint

from tests.conftest import REPO

LOAD = """
model, info = AutoModel.from_pretrained(PATH, output_loading_info=True)
types = {type(model.get_submodule(m)).__name__ for m in MODULES}
report.update(types=sorted(types), missing=sorted(info["missing_keys"]), unexpected=sorted(info["unexpected_keys"]))
"""


def run_python(code: str, path, modules) -> dict:
    prelude = f"import json, sys\nPATH = {str(path)!r}\nMODULES = {list(modules)!r}\nreport = {{}}\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", prelude + code + "\nprint(json.dumps(report))"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checkpoint(tiny_bert_dir, compressed_models):
    path = compressed_models.path(tiny_bert_dir, "4bit")
    return path, Checkpoint.open(path)


@pytest.mark.slow
def test_import_zoo_registers_when_transformers_is_imported_later(checkpoint):
    path, ckpt = checkpoint
    code = (
        "import zoo\n"
        "report['before'] = sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'transformers' or m.startswith('zoo.loaders'))\n"
        "from transformers import AutoModel\n"
        "report['registered'] = 'zoo.loaders' in sys.modules\n" + LOAD
    )
    report = run_python(code, path, ckpt.manifest.modules)
    assert report["before"] == []  # `import zoo` alone keeps the CLI fast: no transformers, no loaders
    assert report["registered"]  # importing transformers brought zoo's quantizer in
    assert report["types"] == ["ZooEmbedding", "ZooLinear"]
    assert report["missing"] == [] and report["unexpected"] == []


@pytest.mark.slow
def test_import_zoo_after_transformers_registers_at_once(checkpoint):
    path, ckpt = checkpoint
    code = "import transformers\nfrom transformers import AutoModel\nimport zoo\n" + LOAD
    report = run_python(code, path, ckpt.manifest.modules)
    assert report["types"] == ["ZooEmbedding", "ZooLinear"]
    assert report["missing"] == [] and report["unexpected"] == []


@pytest.mark.slow
def test_plain_transformers_without_zoo_leaves_compressed_layers_random(checkpoint):
    """What README warns about: with no `import zoo`, transformers ignores the unknown method, reports
    the dense weights MISSING (initialised at random) and the stored tensors UNEXPECTED, and loads."""
    path, ckpt = checkpoint
    code = (
        "import torch\nfrom transformers import AutoModel\n"
        + LOAD
        + "report['registered'] = 'zoo.loaders' in sys.modules or 'zoo' in sys.modules\n"
        "from zoo.formats import Checkpoint  # after the load: importing zoo.formats imports zoo\n"
        "name = MODULES[0]\n"
        "report['same_weight'] = torch.equal(model.get_submodule(name).weight, Checkpoint.open(PATH).decode(name))\n"
    )
    report = run_python(code, path, ckpt.manifest.modules)
    assert not report["registered"]
    assert report["types"] == ["Embedding", "Linear"]
    assert report["missing"] == sorted(f"{m}.weight" for m in ckpt.manifest.modules)
    assert report["unexpected"] == sorted(ckpt.stored_owners())
    assert not report["same_weight"]
