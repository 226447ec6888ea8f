"""Dense bit packing of small unsigned codes (the ternary codec packs its trits itself: codecs/ternary.py).

Bit order (the one place it is defined; every codec uses it):
    The codes form one little-endian bit stream. Code ``i`` of width ``b`` occupies stream bits
    ``[i*b, (i+1)*b)``, its least significant bit first. Stream bit ``j`` is bit ``j % 8``
    (value ``1 << (j % 8)``) of byte ``j // 8``. The final byte is zero-padded in its high bits.
    For b = 4, code 0 is the low nibble of byte 0 and code 1 its high nibble.
    No bits are wasted: ``n`` codes take exactly ``ceil(n * b / 8)`` bytes.

Everything is vectorized in torch; no Python loop runs per element, and results stay on the
input's device.
"""

from __future__ import annotations

import functools
import math

import torch

from .errors import CodecError

MAX_BITS = 16
# codes packed or unpacked per piece: a multiple of 8 codes (whole bytes at any width) and of every block's
# codes, so the pieces' bytes simply follow each other, and the wide temporaries stay a few MB
CHUNK = 1 << 20


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes of ``bits`` bits each."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise CodecError(f"bit width must be 1..{MAX_BITS}, got {bits}")


def _block(bits: int) -> tuple[int, int] | None:
    """(bytes, codes) of the smallest whole-byte block of codes, if it fits in one int64 word.
    3 bits: 3 bytes hold 8 codes; 4 bits: 1 byte holds 2. Odd widths 9..15 need wider words."""
    size = bits // math.gcd(bits, 8)  # bytes per block
    return (size, 8 * size // bits) if size <= 8 else None


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integer codes (< 2**bits) into a uint8 tensor; see the module doc for order."""
    _check_bits(bits)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise CodecError(f"codes must be integers, got {codes.dtype}")
    flat = codes.reshape(-1)
    n = flat.numel()
    if n and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise CodecError(f"codes out of range for {bits}-bit packing")
    if bits == 8:
        return flat.to(torch.uint8, copy=True)  # never a view of the caller's codes
    out = torch.empty(packed_nbytes(n, bits), dtype=torch.uint8, device=flat.device)
    for start in range(0, n, CHUNK):  # byte-aligned pieces keep the int64 temporaries small
        piece = flat[start : start + CHUNK]
        first = start * bits // 8
        out[first : first + packed_nbytes(piece.numel(), bits)] = _pack(piece.to(torch.int64), bits)
    return out


def _pack(flat: torch.Tensor, bits: int) -> torch.Tensor:
    n = flat.numel()
    nbytes = packed_nbytes(n, bits)
    block = _block(bits)
    if block is not None:
        # Whole blocks: fold each block's codes into one int64 word, then split it into bytes.
        size, per = block
        blocks = -(-n // per)
        padded = torch.zeros(blocks * per, dtype=torch.int64, device=flat.device)
        padded[:n] = flat
        word = (padded.view(blocks, per) << (torch.arange(per, device=flat.device) * bits)).sum(dim=1)
        split = (word.unsqueeze(1) >> (torch.arange(size, device=flat.device) * 8)) & 0xFF
        return split.reshape(-1)[:nbytes].to(torch.uint8)
    # General widths: each code, shifted to its bit offset, spans at most 3 bytes (bits <= 16).
    # Bits of distinct codes never overlap, so adding the byte contributions equals OR-ing them.
    offsets = torch.arange(n, dtype=torch.int64, device=flat.device) * bits
    first_byte = offsets // 8
    shifted = flat << (offsets % 8)
    acc = torch.zeros(nbytes + 2, dtype=torch.int64, device=flat.device)
    for k in range(3):
        acc.index_add_(0, first_byte + k, (shifted >> (8 * k)) & 0xFF)
    return acc[:nbytes].to(torch.uint8)


def _check_packed(packed: torch.Tensor, bits: int, count: int) -> None:
    _check_bits(bits)
    need = packed_nbytes(count, bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != need:
        raise CodecError(
            f"packed codes must be a 1-D uint8 tensor of {need} bytes for {count} x {bits}-bit codes, "
            f"got {tuple(packed.shape)} {packed.dtype}"
        )


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` codes as int32."""
    _check_packed(packed, bits, count)
    if bits == 8:
        return packed.to(torch.int32)
    if 8 % bits == 0:  # 1, 2, 4 bits: one table row per byte
        return _lookup(packed, bits, count, _identity(bits, packed.device))
    return _unpack_pieces(packed, bits, count, None)


def unpack_table(packed: torch.Tensor, bits: int, count: int, table: torch.Tensor) -> torch.Tensor:
    """``table[unpack_bits(packed, bits, count)]`` (1-D, ``table``'s dtype; ``table`` holds 2**bits entries).
    Where codes never straddle a byte (1, 2, 4, 8 bits) there are no codes in between: every byte gathers its
    codes' table entries at once; other widths look codes up a piece at a time, while the piece is in cache.
    The entries are copied, never computed, so the result is bit for bit the table's values (a codec's decoded
    levels, say)."""
    _check_packed(packed, bits, count)
    if table.dim() != 1 or table.numel() != 1 << bits:
        raise CodecError(f"a {bits}-bit code table needs {1 << bits} entries, got {tuple(table.shape)}")
    table = table.to(packed.device)
    if 8 % bits:
        return _unpack_pieces(packed, bits, count, table)
    return _lookup(packed, bits, count, table)


# codes unpacked per piece: a multiple of every block's codes (pieces start on a byte), small enough that a
# piece's temporaries stay in cache and that torch runs each op on it in the calling thread (at most its grain
# of 32768 elements): many small multi-threaded ops stall on a busy machine, each waiting for a descheduled thread
UNPACK_CHUNK = 1 << 15


def _unpack_pieces(packed: torch.Tensor, bits: int, count: int, table: torch.Tensor | None) -> torch.Tensor:
    """Codes of widths that straddle bytes (3, 5, 6, 7, 9..16 bits), a piece at a time, as int32 or through
    `table`."""
    out = torch.empty(count, dtype=torch.int32 if table is None else table.dtype, device=packed.device)
    step = UNPACK_CHUNK if packed.device.type == "cpu" else CHUNK
    for start in range(0, count, step):
        n = min(step, count - start)
        first = start * bits // 8
        codes = _unpack(packed[first : first + packed_nbytes(n, bits)], bits, n)
        if table is None:
            out[start : start + n] = codes
        else:
            torch.index_select(table, 0, codes, out=out[start : start + n])
    return out


@functools.cache
def _byte_codes(bits: int) -> torch.Tensor:
    """(256, 8 // bits) int64: the codes each byte value holds, in stream order (bits dividing 8)."""
    per = 8 // bits
    return (torch.arange(256).unsqueeze(1) >> (torch.arange(per) * bits)) & ((1 << bits) - 1)


@functools.cache
def _identity(bits: int, device: torch.device) -> torch.Tensor:
    return torch.arange(1 << bits, dtype=torch.int32, device=device)


def _lookup(packed: torch.Tensor, bits: int, count: int, table: torch.Tensor) -> torch.Tensor:
    """Codes of 1, 2, 4 or 8 bits through `table`: each byte value's entries (a (256, 8 // bits) table), one
    gather of the bytes."""
    return gather_rows(table[_byte_codes(bits).to(table.device)], packed).view(-1)[:count]


_WORDS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
GATHER_CHUNK = 1 << 15  # bytes gathered per piece (in cache, and one thread's work: see UNPACK_CHUNK)


def gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows[index]`` for a small 2-D table and a 1-D integer index: (len(index), rows.shape[1]). A row of 1, 2,
    4 or 8 bytes is gathered as one integer word (torch copies scalars several times faster than rows); the bytes
    are moved, never converted. The indices are widened to int32 a piece at a time into one small buffer: a
    whole-tensor int32 copy would cost more than the gather (every fresh page is a page fault)."""
    width = rows.shape[1] * rows.element_size()
    table = rows.contiguous().view(_WORDS[width]).view(-1) if width in _WORDS else rows
    out = torch.empty((index.numel(), *table.shape[1:]), dtype=table.dtype, device=index.device)
    step = GATHER_CHUNK if index.device.type == "cpu" else max(1, index.numel())  # one launch on an accelerator
    buffer = torch.empty(min(step, index.numel()), dtype=torch.int32, device=index.device)
    for start in range(0, index.numel(), step):
        piece = index[start : start + step]
        at = buffer[: piece.numel()]
        at.copy_(piece)
        torch.index_select(table, 0, at, out=out[start : start + piece.numel()])
    return out.view(rows.dtype).view(-1, rows.shape[1])


def _unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    need = packed.numel()
    mask = (1 << bits) - 1
    block = _block(bits)
    if block is not None:
        size, per = block
        blocks = -(-count // per)
        # a block's bytes folded into one word: int32 holds 3 bytes (3 and 6 bits), else int64
        wide = torch.int32 if size <= 3 else torch.int64
        padded = torch.zeros(blocks * size, dtype=wide, device=packed.device)
        padded[:need] = packed
        rows = padded.view(blocks, size)
        word = rows[:, 0].clone()
        for k in range(1, size):
            word |= rows[:, k] << (8 * k)
        shifts = torch.arange(per, dtype=wide, device=packed.device) * bits
        codes = (word.unsqueeze(1) >> shifts) & mask
        return codes.view(-1)[:count].to(torch.int32)
    data = packed.to(torch.int32)
    offsets = torch.arange(count, dtype=torch.int64, device=data.device) * bits
    first_byte = offsets // 8
    window = torch.cat([data, torch.zeros(2, dtype=torch.int32, device=data.device)])
    word = window[first_byte] | (window[first_byte + 1] << 8) | (window[first_byte + 2] << 16)
    return (word >> (offsets % 8).to(torch.int32)) & mask


def unpack_bits_at(packed: torch.Tensor, bits: int, index: torch.Tensor) -> torch.Tensor:
    """The codes at positions `index` (any shape) of a stream packed by :func:`pack_bits`, as int32, reading
    only the bytes they occupy (an embedding lookup decodes its rows, not the table)."""
    _check_bits(bits)
    offsets = index.to(torch.int64) * bits
    first_byte = offsets // 8
    last = packed.numel() - 1
    word = torch.zeros_like(first_byte, dtype=torch.int32)
    for k in range(3):  # the (up to) three bytes a code spans; bytes past the stream's end read as zero
        at = first_byte + k
        byte = packed[at.clamp(max=last)].to(torch.int32)
        word |= torch.where(at <= last, byte, 0) << (8 * k)
    return (word >> (offsets % 8).to(torch.int32)) & ((1 << bits) - 1)
