"""Writer and reader: round trips, sharding, atomicity, and every kind of bad checkpoint."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from zoo.formats import (
    BaseModelInfo,
    Checkpoint,
    CheckpointWriter,
    ChecksumError,
    FormatError,
    IntSpec,
    Manifest,
    ManifestError,
    NMSpec,
    OutputExistsError,
    RecipeRecord,
    SizeReport,
    codecs,
    module_entry,
    shard_metadata,
    tensor_name,
)

from tests.conftest import leftovers

SPECS = {
    "layer.0.attn": NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=16)),
    "layer.0.ffn": IntSpec(bits=8, group_size=None),
}


def make_checkpoint(out: Path, *, max_shard_bytes: int = 1 << 30, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small zoo checkpoint written with the formats API alone; returns the dense weights."""
    g = torch.Generator().manual_seed(seed)
    dense = {
        "embed.weight": torch.randn(50, 24, generator=g),
        "layer.0.attn.weight": torch.randn(24, 24, generator=g),
        "layer.0.attn.bias": torch.randn(24, generator=g),
        "layer.0.ffn.weight": torch.randn(40, 24, generator=g),
        "norm.weight": torch.ones(24),
    }
    modules = {
        m: module_entry("linear", True, dense[m + ".weight"].shape, "float32", spec) for m, spec in SPECS.items()
    }
    with CheckpointWriter(out, max_shard_bytes=max_shard_bytes, metadata=shard_metadata(modules)) as w:
        for name, t in dense.items():
            module = name.removesuffix(".weight")
            if module in modules:
                for key, v in codecs.encode(t, modules[module].codec).items():
                    w.add(tensor_name(module, key), v)
            else:
                w.add(name, t)
        weights = w.close_weights()
        companion = out.parent / f"{out.name}-tokenizer.json"
        companion.write_text('{"toy": true}')
        w.copy_file(companion, "tokenizer.json")
        manifest = Manifest(
            zoo_version="test",
            recipe=RecipeRecord(name="toy", spec={}),
            base_model=BaseModelInfo(id="toy", source="local", weights_sha256={}, weights_nbytes=1),
            modules=modules,
            sizes=SizeReport(
                checkpoint_nbytes=sum(i.nbytes for n, i in weights.items() if n.endswith(".safetensors")),
                source_nbytes=1,
                checkpoint_ratio=1.0,
                encoder_linear_nbytes=1,
                encoder_linear_fp32_nbytes=1,
                encoder_linear_ratio=1.0,
            ),
            files=w.files,
        )
        w.write_json(
            "config.json", {"model_type": "toy", "quantization_config": manifest.to_quantization_config()}, record=False
        )
        w.commit()
    return dense


@pytest.fixture
def ckpt_dir(tmp_path) -> Path:
    make_checkpoint(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def edit_config(path: Path, change) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config["quantization_config"])
    (path / "config.json").write_text(json.dumps(config))


def header_span(file: Path) -> tuple[int, bytes]:
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, data


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_decodes_every_module(ckpt_dir):
    ckpt = Checkpoint.open(ckpt_dir)
    assert set(ckpt.manifest.modules) == set(SPECS)
    for module, spec in SPECS.items():
        shape = tuple(ckpt.manifest.modules[module].shape)
        tensors = ckpt.module_tensors(module)
        assert torch.equal(ckpt.decode(module), codecs.decode(tensors, spec, shape))
    dense = dict(ckpt.dense_tensors())
    assert set(dense) == {
        "embed.weight",
        "layer.0.attn.weight",
        "layer.0.attn.bias",
        "layer.0.ffn.weight",
        "norm.weight",
    }
    assert dense["layer.0.ffn.weight"].dtype == torch.float32


def test_shards_follow_the_transformers_convention(tmp_path):
    dense = make_checkpoint(tmp_path / "sharded", max_shard_bytes=2000)
    out = tmp_path / "sharded"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (out / "model.safetensors").exists()
    ckpt = Checkpoint.open(out)
    assert set(ckpt.manifest.files) >= set(shards) | {"model.safetensors.index.json", "tokenizer.json"}
    restored = dict(ckpt.dense_tensors())
    assert torch.equal(restored["embed.weight"], dense["embed.weight"])
    for shard in shards:  # every shard is self-describing
        with safe_open(str(out / shard), "pt") as f:
            assert f.metadata()["zoo.manifest_sha256"] == ckpt.manifest.content_sha256()


def test_each_shard_stays_under_the_limit_unless_one_tensor_is_larger(tmp_path):
    make_checkpoint(tmp_path / "s", max_shard_bytes=3000)
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    per_shard: dict[str, int] = {}
    with_one_tensor = set()
    for shard in set(index["weight_map"].values()):
        with safe_open(str(tmp_path / "s" / shard), "pt") as f:
            keys = list(f.keys())
            per_shard[shard] = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in keys)
            if len(keys) == 1:
                with_one_tensor.add(shard)
    assert all(size <= 3000 or shard in with_one_tensor for shard, size in per_shard.items())


def test_files_written_with_normal_permissions(ckpt_dir):
    assert (ckpt_dir / "model.safetensors").stat().st_mode & 0o044 == (ckpt_dir / "config.json").stat().st_mode & 0o044


# -- atomicity --------------------------------------------------------------------------------


def test_failure_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), CheckpointWriter(tmp_path / "out") as w:
        w.add("a", torch.zeros(3))
        w.close_weights()
        raise RuntimeError("boom")
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path, ckpt_dir):
    with pytest.raises(OutputExistsError):
        CheckpointWriter(ckpt_dir)
    with CheckpointWriter(ckpt_dir, overwrite=True) as w:
        w.add("only", torch.zeros(2))
        w.commit()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["model.safetensors"]
    assert leftovers(ckpt_dir.parent) == []


# -- bad input: each a typed error ------------------------------------------------------------


def test_truncated_safetensors(ckpt_dir):
    f = ckpt_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(FormatError, match="not a valid safetensors file"):
        Checkpoint.open(ckpt_dir)


def test_truncated_inside_the_header(ckpt_dir):
    f = ckpt_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(FormatError):
        Checkpoint.open(ckpt_dir)


@pytest.mark.parametrize("xor", [0xFF, 0x01, 0x20])
def test_every_flipped_header_byte_is_caught(tmp_path, xor):
    make_checkpoint(tmp_path / "good")
    n, data = header_span(tmp_path / "good" / "model.safetensors")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "good", bad)
    caught = 0
    for pos in range(8, 8 + n, 3):  # every third header byte, through names, shapes, offsets, metadata
        flipped = bytearray(data)
        flipped[pos] ^= xor
        (bad / "model.safetensors").write_bytes(bytes(flipped))
        with pytest.raises(FormatError):
            Checkpoint.open(bad)
        caught += 1
    assert caught > 100


def test_flipped_byte_in_a_tensor_name_names_the_problem(tmp_path):
    make_checkpoint(tmp_path / "c")
    f = tmp_path / "c" / "model.safetensors"
    _, data = header_span(f)
    pos = data.index(b"layer.0.ffn.weight_scale")
    flipped = bytearray(data)
    flipped[pos + len("layer.0.ffn.weight_s")] ^= 0x01  # 'scale' -> 'sbale'
    f.write_bytes(bytes(flipped))
    with pytest.raises(FormatError, match="layer.0.ffn.weight_scale.*missing"):
        Checkpoint.open(tmp_path / "c")


def test_flipped_byte_in_the_data_is_caught_by_the_checksum(ckpt_dir):
    f = ckpt_dir / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256"):
        Checkpoint.open(ckpt_dir)
    assert Checkpoint.open(ckpt_dir, verify=False)  # structure is intact; only the hash tells


def test_manifest_names_a_missing_tensor(ckpt_dir):
    def add_module(qc):
        qc["modules"]["layer.9.ghost"] = dict(qc["modules"]["layer.0.ffn"])

    edit_config(ckpt_dir, add_module)
    with pytest.raises(FormatError, match="layer.9.ghost.weight_packed.*missing"):
        Checkpoint.open(ckpt_dir)


def test_manifest_with_a_wrong_shape(ckpt_dir):
    edit_config(ckpt_dir, lambda qc: qc["modules"]["layer.0.ffn"].update(shape=[41, 24]))
    with pytest.raises(FormatError, match=r"layer.0.ffn.weight_packed. is \[960\] uint8.*needs \[984\]"):
        Checkpoint.open(ckpt_dir)


def test_manifest_edit_that_keeps_layouts_is_caught_by_the_shard_hash(ckpt_dir):
    edit_config(ckpt_dir, lambda qc: qc["modules"]["layer.0.ffn"].update(kind="conv"))
    with pytest.raises(FormatError, match="different manifest"):
        Checkpoint.open(ckpt_dir)


def test_unknown_format_version(ckpt_dir):
    edit_config(ckpt_dir, lambda qc: qc.update(format_version=99))
    with pytest.raises(ManifestError, match="unsupported zoo format_version 99") as info:
        Checkpoint.open(ckpt_dir)
    assert "upgrade" in info.value.hint


def test_unknown_codec(ckpt_dir):
    edit_config(ckpt_dir, lambda qc: qc["modules"]["layer.0.ffn"]["codec"].update(codec="lattice"))
    with pytest.raises(ManifestError, match="unknown codec 'lattice'"):
        Checkpoint.open(ckpt_dir)


def test_unknown_manifest_field_is_refused(ckpt_dir):
    edit_config(ckpt_dir, lambda qc: qc.update(surprise=1))
    with pytest.raises(ManifestError, match="surprise"):
        Checkpoint.open(ckpt_dir)


def test_tampered_companion_file(ckpt_dir):
    (ckpt_dir / "tokenizer.json").write_text('{"toy": false}')
    with pytest.raises(ChecksumError, match="tokenizer.json"):
        Checkpoint.open(ckpt_dir)


def test_not_a_zoo_checkpoint(ckpt_dir):
    config = json.loads((ckpt_dir / "config.json").read_text())
    del config["quantization_config"]
    (ckpt_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ManifestError, match="no zoo quantization_config"):
        Checkpoint.open(ckpt_dir)


def test_config_is_not_json(ckpt_dir):
    (ckpt_dir / "config.json").write_text("{nope")
    with pytest.raises(FormatError, match="not valid JSON"):
        Checkpoint.open(ckpt_dir)


def test_pickle_only_directory_gets_a_hint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    from zoo.formats import SafetensorsDir

    with pytest.raises(FormatError) as info:
        SafetensorsDir(tmp_path)
    assert "never pickle" in info.value.hint


def test_content_hash_is_stable_and_sensitive():
    a = {"m": module_entry("linear", True, (8, 8), "float32", IntSpec(bits=4, group_size=4))}
    b = {"m": module_entry("linear", True, (8, 8), "float32", IntSpec(bits=4, group_size=4))}
    c = {"m": module_entry("linear", True, (8, 8), "float32", IntSpec(bits=3, group_size=4))}
    assert shard_metadata(a) == shard_metadata(b) != shard_metadata(c)
