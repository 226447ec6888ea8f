"""Tests of zoo.formats.bitpack against an independent, literal reading of its module docstring.

Reference bit order (bitpack docstring): codes form one little-endian bit stream; code i of
width b occupies stream bits [i*b, (i+1)*b), least significant bit first; stream bit j is bit
j % 8 of byte j // 8; the final byte is zero-padded in its high bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zoo.formats import bitpack
from zoo.formats.bitpack import MAX_BITS, pack_bits, packed_nbytes, unpack_bits
from zoo.formats.errors import CodecError

PROPS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ----------------------------------------------------------------------------- references


def ref_pack(codes: list[int], bits: int) -> bytes:
    """Literal docstring rule: build the bit stream LSB-first per code, then 8 stream bits per byte."""
    stream = "".join(format(c, f"0{bits}b")[::-1] for c in codes)  # stream[j] is stream bit j
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[k : k + 8][::-1], 2) for k in range(0, len(stream), 8))


def as_bytes(t: torch.Tensor) -> bytes:
    assert t.dtype == torch.uint8 and t.dim() == 1
    return bytes(t.tolist())


@st.composite
def codes_and_width(draw):
    bits = draw(st.integers(1, 16))
    count = draw(st.one_of(st.integers(0, 70), st.integers(0, 3000)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mode = draw(st.sampled_from(["uniform", "extremes", "zeros", "max"]))
    hi = 1 << bits
    if mode == "uniform":
        codes = rng.integers(0, hi, size=count)
    elif mode == "extremes":
        codes = rng.choice(np.array([0, 1, hi - 2 if hi > 2 else 0, hi - 1]), size=count)
    elif mode == "zeros":
        codes = np.zeros(count, dtype=np.int64)
    else:
        codes = np.full(count, hi - 1, dtype=np.int64)
    return bits, [int(c) for c in codes]


# ----------------------------------------------------------------------------- bit packing


@PROPS
@given(codes_and_width())
def test_pack_matches_reference_and_round_trips(case):
    bits, codes = case
    packed = pack_bits(torch.tensor(codes, dtype=torch.int64), bits)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == math.ceil(len(codes) * bits / 8) == packed_nbytes(len(codes), bits)
    assert as_bytes(packed) == ref_pack(codes, bits)
    unpacked = unpack_bits(packed, bits, len(codes))
    assert unpacked.dtype == torch.int32
    assert unpacked.tolist() == codes


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 7, 8, 9, 13, 15, 16, 17, 31, 33, 100, 1001])
def test_every_width_and_count_round_trips(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    codes = [int(c) for c in rng.integers(0, 1 << bits, size=count)]
    packed = pack_bits(torch.tensor(codes, dtype=torch.int32), bits)
    assert packed.numel() == (count * bits + 7) // 8
    assert as_bytes(packed) == ref_pack(codes, bits)
    assert unpack_bits(packed, bits, count).tolist() == codes


def test_pack_accepts_multidimensional_codes_row_major():
    codes = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    assert as_bytes(pack_bits(codes, 4)) == bytes([0x21, 0x43])


@pytest.mark.parametrize(
    "bits, codes, expected",
    [
        # 4 bits: code 0 is the low nibble of byte 0, code 1 its high nibble.
        (4, [1, 2, 3], [0x21, 0x03]),
        (4, [0xF, 0x0, 0xA], [0x0F, 0x0A]),
        # 3 bits, [5, 3, 7, 1]: stream bits (LSB first per code) 101 110 111 100 ->
        # byte 0 = bits 0..7 = 1,0,1,1,1,0,1,1 -> 0b11011101 = 0xDD; byte 1 = bits 8..11 = 1,1,0,0 -> 0x03.
        (3, [5, 3, 7, 1], [0xDD, 0x03]),
        # 3 bits, [1, 2]: 6 stream bits 100 010 -> byte 0b00010001 = 0x11.
        (3, [1, 2], [0x11]),
        # 5 bits, [31, 0, 17]: 31 + (0 << 5) + (17 << 10) = 0x441F -> 15 bits -> bytes 1F 44.
        (5, [31, 0, 17], [0x1F, 0x44]),
        # 5 bits, [1, 2, 3, 4]: 1 + (2 << 5) + (3 << 10) + (4 << 15) = 0x20C41 -> 20 bits -> 41 0C 02.
        (5, [1, 2, 3, 4], [0x41, 0x0C, 0x02]),
        # 1 bit: code i is bit i of byte 0.
        (1, [1, 0, 0, 0, 0, 0, 0, 1, 1], [0x81, 0x01]),
        # 2 bits: [3, 0, 1, 2] -> 0b10_01_00_11 = 0x93.
        (2, [3, 0, 1, 2], [0x93]),
        # 8 bits: one byte per code.
        (8, [0, 255, 7], [0x00, 0xFF, 0x07]),
        # 12 bits: [0xABC, 0x123] -> 0x123ABC little endian -> BC 3A 12.
        (12, [0xABC, 0x123], [0xBC, 0x3A, 0x12]),
        # 16 bits: little-endian uint16.
        (16, [0xBEEF, 0x0102], [0xEF, 0xBE, 0x02, 0x01]),
        # 7 bits: [0x7F, 1] -> 0x7F + (1 << 7) = 0xFF -> 14 bits -> FF 00.
        (7, [0x7F, 1], [0xFF, 0x00]),
        (6, [], []),
    ],
)
def test_documented_bit_order_by_hand(bits, codes, expected):
    packed = pack_bits(torch.tensor(codes, dtype=torch.int32), bits)
    assert packed.tolist() == expected
    assert unpack_bits(torch.tensor(expected, dtype=torch.uint8), bits, len(codes)).tolist() == codes


@pytest.mark.parametrize("bits", range(1, 17))
def test_out_of_range_codes_raise(bits):
    with pytest.raises(CodecError):
        pack_bits(torch.tensor([0, 1 << bits], dtype=torch.int32), bits)
    with pytest.raises(CodecError):
        pack_bits(torch.tensor([-1, 0], dtype=torch.int32), bits)
    # the largest code is fine
    pack_bits(torch.tensor([(1 << bits) - 1], dtype=torch.int32), bits)


def test_huge_int64_codes_raise():
    with pytest.raises(CodecError):
        pack_bits(torch.tensor([2**32 + 1], dtype=torch.int64), 4)


@pytest.mark.parametrize("bits", [0, 17, -1])
def test_invalid_width_raises(bits):
    with pytest.raises(CodecError):
        pack_bits(torch.tensor([0], dtype=torch.int32), bits)
    with pytest.raises(CodecError):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), bits, 1)


@pytest.mark.parametrize("bits, count", [(4, 3), (3, 4), (5, 7), (1, 9), (16, 2)])
def test_unpack_wrong_size_raises(bits, count):
    need = packed_nbytes(count, bits)
    good = torch.zeros(need, dtype=torch.uint8)
    unpack_bits(good, bits, count)
    for bad in (
        torch.zeros(need + 1, dtype=torch.uint8),
        torch.zeros(need - 1, dtype=torch.uint8),
        torch.zeros(need, dtype=torch.int32),
        torch.zeros(need, dtype=torch.int8),
        torch.zeros(1, need, dtype=torch.uint8),
    ):
        with pytest.raises(CodecError):
            unpack_bits(bad, bits, count)


def test_unpack_ignores_padding_bits_of_last_byte():
    # 3 codes of 3 bits use 9 bits; the 7 high bits of byte 1 are padding.
    assert unpack_bits(torch.tensor([0xFF, 0xFF], dtype=torch.uint8), 3, 3).tolist() == [7, 7, 7]
    assert as_bytes(pack_bits(torch.tensor([7, 7, 7]), 3)) == bytes([0xFF, 0x01])


def test_float_codes_are_refused():
    with pytest.raises(CodecError, match="integers"):
        pack_bits(torch.tensor([1.7]), 4)


@pytest.mark.parametrize("bits", range(1, MAX_BITS + 1))
def test_packing_in_pieces_gives_the_same_stream(monkeypatch, bits):
    """Long streams are packed and unpacked a piece at a time; the pieces' bytes must join into the one stream."""
    codes = torch.randint(0, 1 << bits, (64 * 7 + 5,), generator=torch.Generator().manual_seed(bits), dtype=torch.int32)
    whole = pack_bits(codes, bits)
    monkeypatch.setattr(bitpack, "CHUNK", 64)
    monkeypatch.setattr(bitpack, "UNPACK_CHUNK", 64)  # unpacking's own pieces (widths that straddle bytes)
    monkeypatch.setattr(bitpack, "GATHER_CHUNK", 24)  # and the byte lookups' (1, 2, 4 bits)
    assert torch.equal(pack_bits(codes, bits), whole)
    assert torch.equal(unpack_bits(whole, bits, codes.numel()), codes)


@pytest.mark.parametrize("bits", range(1, MAX_BITS + 1))
@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, torch.float16])
def test_unpacking_through_a_table_copies_its_entries(monkeypatch, bits, dtype):
    """unpack_table is table[unpack_bits(...)], bit for bit, whole or in pieces, for any entry width."""
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (64 * 7 + 5,), generator=gen, dtype=torch.int32)
    table = (torch.randn(1 << bits, generator=gen) * 50).to(dtype)
    packed = pack_bits(codes, bits)
    want = table[codes.long()]
    assert torch.equal(bitpack.unpack_table(packed, bits, codes.numel(), table), want)
    monkeypatch.setattr(bitpack, "UNPACK_CHUNK", 64)
    monkeypatch.setattr(bitpack, "GATHER_CHUNK", 24)
    assert torch.equal(bitpack.unpack_table(packed, bits, codes.numel(), table), want)
    with pytest.raises(CodecError, match="entries"):
        bitpack.unpack_table(packed, bits, codes.numel(), table[:-1])


@pytest.mark.parametrize("bits", range(1, MAX_BITS + 1))
def test_codes_read_at_positions_match_the_unpacked_stream_up_to_its_last_byte(bits):
    """A lookup reads only the bytes its codes span; the last codes sit against the end of the stream."""
    codes = torch.randint(0, 1 << bits, (37,), generator=torch.Generator().manual_seed(bits), dtype=torch.int32)
    packed = pack_bits(codes, bits)
    at = torch.tensor([[36, 0], [35, 17]])
    assert torch.equal(bitpack.unpack_bits_at(packed, bits, at), codes[at])
