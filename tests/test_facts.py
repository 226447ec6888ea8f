"""One owner per fact, in the lowest layer that needs it: the layers above import it, so that no two copies can
drift apart (the task -> Auto class table, the block names, QUANT_METHOD, read_config and the atomic write were
each once defined twice)."""

from __future__ import annotations

import ast
import collections

import pytest
import torch

from tests.conftest import REPO

LAYERS = ("zoo", "formats", "loaders", "cards")


def code_files():
    return [path for layer in LAYERS for path in sorted((REPO / layer).rglob("*.py"))]


def test_no_constant_is_written_out_twice():
    """No two modules assign the same string, tuple, list or dict literal to a module-level constant: the second
    one imports the first. (QUANT_METHOD = "zoo" and the registry's INDEX_FILE were each written twice.)"""
    owners = collections.defaultdict(list)
    for path in code_files():
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                continue
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name) and target.id.lstrip("_").isupper():
                    try:
                        value = ast.literal_eval(node.value)
                    except ValueError:
                        continue
                    if isinstance(value, (str, tuple, list, dict)):
                        owners[repr(value)].append(f"{path.relative_to(REPO)}:{target.id}")
    assert {value: where for value, where in owners.items() if len(where) > 1} == {}


def test_the_block_names_have_one_owner():
    from zoo.formats import manifest
    from zoo.loaders import structure

    from zoo.methods import gptq
    from zoo.recipes import BLOCK_PATTERN, Rule, builtin_names, builtin_text, is_encoder_linear

    assert BLOCK_PATTERN is manifest.BLOCK_PATTERN and gptq.BLOCK_PATTERN is manifest.BLOCK_PATTERN
    assert is_encoder_linear is manifest.is_encoder_linear
    assert structure._LAYER_LIST.pattern.startswith(manifest.BLOCK_LIST)
    assert structure._LAYER_INDEX.pattern.startswith(manifest.BLOCK_LIST)
    assert Rule(codec={"codec": "binary"}).targets == [manifest.BLOCK_PATTERN]
    names = "|".join(manifest.BLOCK_LISTS)
    for path in code_files():  # nowhere else spelt out
        if path != REPO / "formats" / "manifest.py":
            assert names not in path.read_text(), path
    for name in builtin_names():  # the built-in recipes take the default rather than repeat it
        assert names not in builtin_text(name), name


def test_quant_method_has_one_owner():
    from zoo.formats.manifest import QUANT_METHOD
    from zoo.loaders import auto, quantizer

    assert quantizer.QUANT_METHOD is QUANT_METHOD and auto.QUANT_METHOD is QUANT_METHOD
    written_out = []  # `... == "zoo"` or {"quant_method": "zoo"} in code
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            values = node.comparators if isinstance(node, ast.Compare) else getattr(node, "values", None)
            values = values if isinstance(node, (ast.Compare, ast.Dict)) else []
            if any(isinstance(v, ast.Constant) and v.value == QUANT_METHOD for v in values):
                written_out.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert written_out == []


def test_the_task_table_has_one_owner():
    """loaders.auto.TASKS loads the models; the card's loading example names the same class."""
    import zoo.cards.facts
    import zoo.loaders
    from zoo.cards.card import _load_section
    from zoo.loaders.auto import TASKS

    assert zoo.loaders.TASKS is TASKS
    assert not hasattr(zoo.cards.facts, "AUTO_CLASSES")
    for tag, auto in TASKS.items():
        assert f"model = {auto}.from_pretrained(" in "\n".join(_load_section("m", tag, False))


def test_the_architecture_lookup_has_one_owner():
    import transformers
    from transformers import BertConfig
    from zoo.loaders.auto import architecture_class, model_class

    assert architecture_class({"architectures": ["BertForMaskedLM"]}) is transformers.BertForMaskedLM
    assert architecture_class(BertConfig(architectures=["BertModel"])) is transformers.BertModel
    assert architecture_class({"architectures": ["NoSuchModel"]}) is None and architecture_class({}) is None
    assert model_class(None, {"architectures": ["NoSuchModel"]}) is transformers.AutoModel
    source = (REPO / "zoo" / "architecture.py").read_text()
    assert "getattr(transformers" not in source and "architecture_class(" in source


def test_the_supported_layers_have_one_owner():
    """What compress classifies as linear / embedding / conv is exactly what the loader rebuilds."""
    from zoo.formats.errors import FormatError
    from zoo.loaders.runtime import layer_kind, runtime_module

    from zoo.architecture import layer_kind as compress_kind

    assert compress_kind is layer_kind

    class LoRALinear(torch.nn.Linear):
        pass

    for module in (LoRALinear(2, 2), torch.nn.ConvTranspose1d(2, 2, 3), torch.nn.LayerNorm(2)):
        assert layer_kind(module) is None
        with pytest.raises(FormatError, match="zoo rebuilds only"):
            runtime_module("m", None, module, torch.float32)


def test_config_json_is_parsed_in_one_place(tmp_path):
    """loaders.auto.read_config (local or hub, through transformers' cache) parses with formats' reader."""
    from zoo.formats import read_config
    from zoo.formats.errors import FormatError
    from zoo.loaders.auto import read_config as read_any_config

    (tmp_path / "config.json").write_text("[1, 2]")
    for read in (read_config, read_any_config):
        with pytest.raises(FormatError, match="does not hold a JSON object"):
            read(tmp_path)


def test_files_are_written_atomically_in_one_place():
    """formats.writer.write_file_atomic: the temporary file, its mode, fsync, the rename and the clean-up."""
    writer = REPO / "formats" / "writer.py"
    assert [p for p in code_files() if p != writer and "mkstemp" in p.read_text()] == []
