"""The codec registry: every registered codec is served by every layer that claims it (the format, recipes and
manifests, kernel mode's integer grid, cards, training fakes, bench's bound), and a codec is one file."""

from __future__ import annotations

import re
import subprocess

import pydantic
import pytest
import torch
from zoo.formats import codecs
from zoo.formats.codecs import CODEC_NAMES, VALUE_CODEC_NAMES, CodecSpec, FakeOptions, fake_for, registered
from zoo.formats.errors import CodecError
from zoo.formats.manifest import ModuleEntry, module_entry
from zoo.formats.spec import SPECS

from tests.conftest import REPO

# One or more settings of each codec; a codec that registers without a line here fails the first test.
EXAMPLES = {
    "binary": [{"codec": "binary", "group_size": 16}],
    "codebook": [{"codec": "codebook", "bits": 3}, {"codec": "codebook", "bits": 2, "group_rows": 4}],
    "dense": [{"codec": "dense", "dtype": "bfloat16"}],
    "int": [
        {"codec": "int", "bits": 4, "group_size": 16},
        {"codec": "int", "bits": 3, "symmetric": False},
        {"codec": "int", "bits": 5, "zero_preserving": False, "group_size": None},
    ],
    "kronecker": [{"codec": "kronecker", "b_shape": [4, 6], "rank": 2, "factors": {"codec": "int", "bits": 8}}],
    "nm": [
        {"codec": "nm", "n": 2, "m": 4, "values": {"codec": "int", "bits": 4, "group_size": 8}},
        {"codec": "nm", "n": 1, "m": 4, "values": {"codec": "ternary", "group_size": None}},
    ],
    "ternary": [{"codec": "ternary", "group_size": 16, "threshold": 0.5}],
}
SPEC = pydantic.TypeAdapter(CodecSpec)
CASES = [
    pytest.param(SPEC.validate_python(raw), id=f"{name}-{i}")
    for name in sorted(EXAMPLES)
    for i, raw in enumerate(EXAMPLES[name])
]
SHAPE = (24, 48)


def weight() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))


def test_every_registered_codec_has_examples_and_a_spec_by_name():
    assert sorted(EXAMPLES) == sorted(registered()) == sorted(CODEC_NAMES)
    assert set(VALUE_CODEC_NAMES) == {name for name, codec in registered().items() if codec.value_codec}
    assert {codec.spec.__name__ for codec in registered().values()} == set(SPECS)


@pytest.mark.parametrize("spec", CASES)
def test_the_format_serves_it(spec):
    w = weight()
    tensors = codecs.encode(w, spec)
    codecs.check_tensors(tensors, SHAPE, spec)  # what layout promised
    assert codecs.nbytes(SHAPE, spec) == sum(t.numel() * t.element_size() for t in tensors.values())
    decoded = codecs.decode(tensors, spec, SHAPE)
    assert decoded.shape == SHAPE and decoded.dtype == torch.float32
    rows = torch.tensor([5, 0, 23, 5])
    assert torch.equal(codecs.decode_rows(tensors, spec, SHAPE, rows), decoded[rows])
    if spec.codec != "kronecker":  # what a checkpoint holds re-encodes to itself (Kronecker finds another pair)
        again = codecs.encode(decoded, spec)
        assert torch.allclose(codecs.decode(again, spec, SHAPE), decoded, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("spec", CASES)
def test_recipes_and_manifests_parse_it(spec):
    assert SPEC.validate_json(spec.model_dump_json()) == spec
    entry = module_entry("linear", True, SHAPE, "float32", spec)
    assert entry.nbytes == codecs.nbytes(SHAPE, spec)
    assert ModuleEntry.model_validate_json(entry.model_dump_json()) == entry
    assert spec.describe()


def test_a_manifest_entry_is_made_only_for_a_float_weight():
    spec = SPEC.validate_python({"codec": "int", "bits": 4, "group_size": 16})
    for dtype in ("float32", "float16", "bfloat16"):
        assert module_entry("linear", True, SHAPE, dtype, spec).dtype == dtype
    with pytest.raises(CodecError, match="a weight of dtype int8 cannot be compressed"):
        module_entry("linear", True, SHAPE, "int8", spec)


@pytest.mark.parametrize("spec", CASES)
def test_cards_and_bench_serve_it(spec):
    from zoo.cards.facts import sparsity, value_bits

    from bench.compress import information_bits

    codec = codecs.codec_for(spec)
    assert 0 < value_bits(spec) == codec.value_bits(spec) <= 32
    assert 0 <= sparsity(spec) < 1
    assert all(isinstance(tag, str) and tag for tag in codec.tags(spec))
    assert 0 < information_bits(SHAPE, spec) <= codecs.nbytes(SHAPE, spec) * 8  # a bound: never above the bytes


@pytest.mark.parametrize("spec", CASES)
def test_kernel_mode_grid_is_exact_where_the_codec_has_one(spec):
    tensors = codecs.encode(weight(), spec)
    grid = codecs.int_grid(tensors, spec, SHAPE)
    assert (grid is None) == (spec.codec in ("codebook", "dense", "kronecker"))  # floats: no integer grid
    if grid is None:
        return
    rebuilt = torch.cat([grid.q[:, a:b].float() * grid.scale[:, i : i + 1] for i, (a, b) in enumerate(grid.bounds)], 1)
    assert grid.q.dtype == torch.int8
    assert torch.equal(rebuilt, codecs.decode(tensors, spec, SHAPE))


@pytest.mark.parametrize("spec", CASES)
def test_the_training_fake_computes_what_the_codec_stores(spec):
    w = weight().requires_grad_()
    fake = fake_for(spec, w, FakeOptions())
    out = fake(w)
    stored = codecs.decode(codecs.encode(w.detach(), spec), spec, SHAPE)
    # Kronecker trains with one contraction over the rank, not the codec's term-by-term sum: rounding apart
    assert torch.allclose(out, stored, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    trained = [p for p in fake.parameters() if p.grad is not None]
    assert w.grad is not None or trained, "no gradient reaches the weight or the fake's own parameters"


def test_an_unknown_codec_is_a_typed_error():
    from zoo.formats.errors import CodecError

    class Fake(pydantic.BaseModel):
        codec: str = "nonesuch"

    with pytest.raises(CodecError, match="unknown codec 'nonesuch'"):
        codecs.codec_for(Fake())


def test_a_codec_is_one_file():
    """Ternary's footprint: formats/codecs/ternary.py and its tests. No other module of the package names its
    spec or imports its module (docstrings may mention ternary weights)."""
    files = subprocess.run(
        ["git", "ls-files", "formats", "loaders", "cards", "zoo", "bench"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    naming = re.compile(r"TernarySpec|codecs\.ternary|codecs import .*\bternary\b|\bpack_trits|\bunpack_trits")
    others = [
        name
        for name in files
        if name.endswith(".py") and name != "formats/codecs/ternary.py" and naming.search((REPO / name).read_text())
    ]
    assert others == []
