"""Tests of the ternary codec's trit packing against an independent, literal reading of its module docstring:
byte = t0 + 3*t1 + 9*t2 + 27*t3 + 81*t4, last byte padded with trit 0. (The codec's arithmetic is tested with
every codec's in test_codecs.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zoo.formats.codecs import ternary
from zoo.formats.codecs.ternary import pack_trits, trit_nbytes, unpack_trits
from zoo.formats.errors import CodecError

PROPS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def ref_pack_trits(trits: list[int]) -> bytes:
    padded = list(trits) + [0] * (-len(trits) % 5)
    return bytes(sum(t * 3**i for i, t in enumerate(padded[k : k + 5])) for k in range(0, len(padded), 5))


def as_bytes(t: torch.Tensor) -> bytes:
    assert t.dtype == torch.uint8 and t.dim() == 1
    return bytes(t.tolist())


@PROPS
@given(st.lists(st.integers(0, 2), max_size=400))
def test_trits_round_trip_and_match_reference(trits):
    packed = pack_trits(torch.tensor(trits, dtype=torch.int64))
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == math.ceil(len(trits) / 5) == trit_nbytes(len(trits))
    assert as_bytes(packed) == ref_pack_trits(trits)
    out = unpack_trits(packed, len(trits))
    assert out.dtype == torch.int32
    assert out.tolist() == trits


@pytest.mark.parametrize(
    "trits, expected",
    [
        ([2, 1, 0, 1, 2], [194]),  # 2 + 3*1 + 9*0 + 27*1 + 81*2
        ([2, 2, 2, 2, 2], [242]),
        ([0, 0, 0, 0, 0], [0]),
        ([1, 2], [7]),  # 1 + 3*2, padded with trit 0
        ([0, 1, 2, 0, 0, 2, 2], [3 + 18, 2 + 6]),
        ([], []),
    ],
)
def test_trit_bytes_by_hand(trits, expected):
    assert pack_trits(torch.tensor(trits, dtype=torch.int32)).tolist() == expected
    assert unpack_trits(torch.tensor(expected, dtype=torch.uint8), len(trits)).tolist() == trits


@pytest.mark.parametrize("byte", [243, 250, 255])
def test_trit_byte_out_of_range_rejected(byte):
    with pytest.raises(CodecError):
        unpack_trits(torch.tensor([0, byte], dtype=torch.uint8), 10)


def test_trit_byte_242_accepted():
    assert unpack_trits(torch.tensor([242], dtype=torch.uint8), 5).tolist() == [2, 2, 2, 2, 2]


@pytest.mark.parametrize("bad", [[3], [-1], [0, 1, 2, 5]])
def test_pack_trits_rejects_non_trits(bad):
    with pytest.raises(CodecError):
        pack_trits(torch.tensor(bad, dtype=torch.int32))


@pytest.mark.parametrize("count", [1, 5, 6, 11])
def test_unpack_trits_wrong_size_raises(count):
    need = trit_nbytes(count)
    for bad in (
        torch.zeros(need + 1, dtype=torch.uint8),
        torch.zeros(need - 1, dtype=torch.uint8),
        torch.zeros(need, dtype=torch.int32),
        torch.zeros(1, need, dtype=torch.uint8),
    ):
        with pytest.raises(CodecError):
            unpack_trits(bad, count)


def test_trits_in_pieces_give_the_same_stream(monkeypatch):
    trits = torch.randint(0, 3, (5 * 40 + 3,), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    whole = pack_trits(trits)
    monkeypatch.setattr(ternary, "TRIT_CHUNK", 5 * 8)
    assert torch.equal(pack_trits(trits), whole)
    assert torch.equal(unpack_trits(whole, trits.numel()), trits)
