"""Codebook (k-means) codec: 2^bits centroids per codebook plus a bits-wide index per weight.

Stored tensors:
    codebook  float16 (codebooks, 2^bits)  ascending centroids; codebook j serves rows
              [j*group_rows, (j+1)*group_rows) (one codebook for the whole tensor by default)
    indices   uint8 (ceil(numel*bits/8),)  row-major indices, bitpack order

Centroids come from 1-D Lloyd iterations started at evenly spaced quantiles; a codebook whose
values have at most 2^bits distinct values gets exactly those values (so weights already drawn
from a codebook are stored exactly, up to the centroid dtype). After rounding the centroids to
their storage dtype every weight takes the index of its nearest stored centroid (ties: lower).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..bitpack import UNPACK_CHUNK, pack_bits, packed_nbytes, unpack_bits, unpack_table
from .base import (
    DTYPES,
    Codec,
    FakeOptions,
    FloatDType,
    SpecBase,
    TensorLayout,
    as_matrix,
    matrix_shape,
    register,
    round_to_dtype,
    row_codes,
    side_bits,
    stored,
)


class CodebookSpec(SpecBase):
    """k-means: 2^bits centroids per codebook (one per tensor, or one per `group_rows` rows) and
    a bits-wide index per weight."""

    codec: Literal["codebook"] = "codebook"
    bits: int = Field(ge=1, le=8)
    group_rows: int | None = Field(default=None, ge=1)
    iterations: int = Field(default=30, ge=0)
    centroid_dtype: FloatDType = "float16"

    def describe(self) -> str:
        where = {None: "per-tensor", 1: "per-row"}.get(self.group_rows, f"per-{self.group_rows}-rows")
        return f"kmeans {1 << self.bits} centroids {where}"


# a table with one codebook is a single row of millions of values: k-means and the nearest-centroid search
# walk it this many values at a time, so their int64 temporaries stay small
COLUMNS = 1 << 18


def codebook_count(rows: int, spec: CodebookSpec) -> tuple[int, int]:
    per = rows if spec.group_rows is None else min(spec.group_rows, rows)
    return per, math.ceil(rows / per)


def _distinct_or_none(sorted_x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of sorted values: the distinct values padded with the largest, and whether they fit in k."""
    new = torch.ones_like(sorted_x, dtype=torch.bool)
    new[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    fits = new.sum(dim=1) <= k
    table = sorted_x[:, -1:].expand(-1, k).clone()
    if bool(fits.any()):  # rows already on a codebook (rare): their values, in order; the int64 slots only then
        rows = fits.nonzero().squeeze(1)
        slot = new[rows].cumsum(dim=1) - 1
        table[rows] = table[rows].scatter(1, slot.clamp(max=k - 1), sorted_x[rows])
    return table, fits


def _sorted(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted; a row of millions of values (a table's one codebook) through numpy, whose sort makes no
    int64 index tensor twice the size of the values."""
    if x.shape[0] == 1 and x.shape[1] > COLUMNS and x.device.type == "cpu":
        import numpy as np

        return torch.from_numpy(np.sort(x.numpy(), axis=1))  # values only: no need for a stable (slower) sort
    return x.sort(dim=1).values


class _RunSums:
    """Sums of the leading values of each row of sorted float32 `x`, in float64, with no float64 copy of `x`.

    A full float64 prefix sum costs twice the values' own memory (188 MB for a BERT-base word-embedding table
    sorted as one row). Instead: float64 totals of every `width` values (cumulated), plus, for each position
    asked, the float64 sum of the at most `width` - 1 values between its block's start and it, read through a
    window. With width ~ sqrt(n / k) the totals and the k windows an iteration reads are both ~sqrt(n k) values."""

    def __init__(self, x: torch.Tensor, k: int):
        rows, n = x.shape
        self.x, self.n = x, n
        self.width = width = max(1, min(n, math.isqrt(n // k)))
        blocks = x.unfold(1, width, width)  # (rows, n // width, width): a view
        step = max(1, COLUMNS // (rows * width))  # blocks summed at a time: small float64 temporaries
        sums = torch.cat([blocks[:, i : i + step].double().sum(dim=2) for i in range(0, blocks.shape[1], step)], dim=1)
        self.totals = torch.zeros(rows, sums.shape[1] + 1, dtype=torch.float64, device=x.device)
        torch.cumsum(sums, dim=1, out=self.totals[:, 1:])
        self.windows = x.unfold(1, width, 1)  # every run of `width` values: a view
        self.row = torch.arange(rows, device=x.device).unsqueeze(1)
        self.offsets = torch.arange(width, device=x.device)

    def before(self, positions: torch.Tensor) -> torch.Tensor:
        """(rows, m) int64 positions in [0, n] -> float64 sums of x[row, :position]."""
        width = self.width
        block = torch.div(positions, width, rounding_mode="floor")
        base = block * width
        start = base.clamp(max=self.n - width)  # the last window ends at n
        values = self.windows[self.row, start]  # (rows, m, width)
        at = start.unsqueeze(2) + self.offsets
        keep = (at >= base.unsqueeze(2)) & (at < positions.unsqueeze(2))
        return self.totals.gather(1, block) + torch.where(keep, values.double(), 0.0).sum(dim=2)


def kmeans_1d(values: torch.Tensor, k: int, iterations: int) -> torch.Tensor:
    """Batched 1-D k-means: `values` (batch, n) -> ascending centroids (batch, k), float32.

    The values are sorted once, so each centroid's values are one contiguous run: an iteration finds the k-1
    run boundaries by binary search of the midpoints between centroids into the sorted values, and each run's
    sum in float64 from block totals and a window (_RunSums). An iteration costs O(k (log n + sqrt(n / k))), not
    O(n log k): the values are touched once, and nothing the size of the values is made beside their sorted copy."""
    x = _sorted(values.to(torch.float32))
    n = x.shape[1]
    exact, fits = _distinct_or_none(x, k)
    pick = ((torch.arange(k, dtype=torch.float64, device=x.device) + 0.5) / k * n).long().clamp(max=n - 1)
    centroids = x[:, pick].contiguous()
    runs = _RunSums(x, k)
    ends = torch.full((x.shape[0], 1), n, dtype=torch.int64, device=x.device)
    starts = torch.zeros_like(ends)
    zero = torch.zeros(x.shape[0], 1, dtype=torch.float64, device=x.device)
    whole = runs.before(ends)
    for _ in range(iterations):
        bounds = ((centroids[:, 1:] + centroids[:, :-1]) / 2).contiguous()
        # a value belongs to the first centroid whose upper midpoint is >= it (ties to the lower centroid)
        cuts = torch.searchsorted(x, bounds, right=True)
        lo, hi = torch.cat([starts, cuts], dim=1), torch.cat([cuts, ends], dim=1)
        counts = hi - lo
        prefix = torch.cat([zero, runs.before(cuts), whole], dim=1)
        sums = prefix[:, 1:] - prefix[:, :-1]
        means = (sums / counts.clamp(min=1)).to(torch.float32)
        updated = torch.where(counts > 0, means, centroids).sort(dim=1).values
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return torch.where(fits.unsqueeze(1), exact, centroids)


def nearest(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (ties to the lower index) for each value; both batched by row. One binary
    search per value against the midpoints of the ascending centroids: a value on a midpoint, or equal to several
    equal centroids, goes to the lower index."""
    c = centroids.to(torch.float32)
    bounds = ((c[:, 1:] + c[:, :-1]) / 2).contiguous()
    return torch.searchsorted(bounds, values.contiguous())


def row_blocks(w: torch.Tensor, per: int):
    """(start_row, block) for full blocks of `per` rows at once, then the shorter tail block."""
    rows = w.shape[0]
    full = rows // per
    if full:
        yield 0, w[: full * per].reshape(full, -1)
    if full * per < rows:
        yield full * per, w[full * per :].reshape(1, -1)


class CodebookFake(nn.Module):
    """k-means codebooks during training: fixed assignments, fine-tuned centroids (Deep Compression).

    At the start each codebook's centroids come from this codec's own k-means and every weight is assigned to
    its nearest centroid, as `encode` does; training then updates only the centroids (each one's gradient is the
    sum of its members' gradients). Centroids pass through their storage dtype in the forward pass, so the
    exported codebook holds exactly the trained values."""

    index: torch.Tensor  # buffers, from register_buffer
    book_of_row: torch.Tensor

    def __init__(self, spec: CodebookSpec, weight: torch.Tensor):
        super().__init__()
        self.spec = spec
        matrix = weight.detach().reshape(weight.shape[0], -1).float()
        rows, cols = matrix.shape
        per, count = codebook_count(rows, spec)
        k = 1 << spec.bits
        books, index = [], []
        for _, block in row_blocks(matrix, per):
            book = round_to_dtype(kmeans_1d(block, k, spec.iterations), spec.centroid_dtype).float()
            books.append(book)
            index.append(nearest(block, book).view(-1, cols))
        self.centroids = nn.Parameter(torch.cat(books))  # (codebooks, k)
        # k <= 256: uint8, as `encode` narrows them, and a dtype gloo and NCCL broadcast (DDP syncs buffers)
        self.register_buffer("index", torch.cat([i.reshape(-1, cols) for i in index]).to(torch.uint8))
        self.register_buffer("book_of_row", (torch.arange(rows) // per).clamp(max=count - 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        books = stored(self.centroids, self.spec.centroid_dtype)
        values = books[self.book_of_row.unsqueeze(1), self.index.long()]
        # the latent weight is unused: assignments are fixed; keep it in the graph with zero gradient
        return (values + 0.0 * w.reshape(values.shape)).reshape(w.shape).to(w.dtype)


def _decode_blocks(
    indices: torch.Tensor, bits: int, rows: int, cols: int, per: int, book: torch.Tensor
) -> torch.Tensor:
    """(rows * cols,) float32 centroids of several codebooks (one per `per` rows), a block of whole rows at a time:
    each index, offset to its codebook's row of the flattened books (int32), picks its centroid with one
    index_select per block, while the block is in cache. Centroids are copied, so values are exactly the book's."""
    k = 1 << bits
    flat = book.reshape(-1)
    out = torch.empty(rows * cols, dtype=torch.float32, device=book.device)
    unit = 8 // math.gcd(cols * bits, 8)  # rows whose indices end on a byte
    step = max(unit, UNPACK_CHUNK // cols // unit * unit)
    offset = (torch.arange(rows, dtype=torch.int32, device=book.device) // per * k).unsqueeze(1)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        n = (stop - start) * cols
        first = start * cols * bits // 8
        codes = unpack_bits(indices[first : first + packed_nbytes(n, bits)], bits, n).view(stop - start, cols)
        codes += offset[start:stop]
        torch.index_select(flat, 0, codes.view(-1), out=out[start * cols : stop * cols])
    return out


@register
class Codebook(Codec):
    spec = CodebookSpec

    def encode(
        self, weight: torch.Tensor, spec: CodebookSpec, scale: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        w = as_matrix(weight)
        rows = w.shape[0]
        per, _ = codebook_count(rows, spec)
        k = 1 << spec.bits
        books, indices = [], []
        for _, block in row_blocks(w, per):
            book = round_to_dtype(kmeans_1d(block, k, spec.iterations), spec.centroid_dtype)
            books.append(book)
            # a piece at a time, each index narrowed at once (k <= 256): no int64 copy of a whole table
            indices.append(
                torch.cat(
                    [nearest(piece, book).to(torch.uint8) for piece in block.split(COLUMNS, dim=1)], dim=1
                ).reshape(-1)
            )
        return {
            "codebook": torch.cat(books),
            "indices": pack_bits(torch.cat(indices), spec.bits),
        }

    def decode(self, tensors, spec: CodebookSpec, shape) -> torch.Tensor:
        rows, cols = matrix_shape(shape)
        per, _ = codebook_count(rows, spec)
        book = tensors["codebook"].to(torch.float32)
        if per == rows:  # one codebook: the packed bytes index it directly
            return unpack_table(tensors["indices"], spec.bits, rows * cols, book[0]).reshape(shape)
        return _decode_blocks(tensors["indices"], spec.bits, rows, cols, per, book).reshape(shape)

    def decode_rows(self, tensors, spec: CodebookSpec, shape, rows: torch.Tensor) -> torch.Tensor:
        total, cols = matrix_shape(shape)
        per, _ = codebook_count(total, spec)
        idx = row_codes(tensors["indices"], spec.bits, total, cols, rows).long()
        book = tensors["codebook"].to(torch.float32)
        return book[(rows // per).unsqueeze(1), idx]

    def layout(self, shape, spec: CodebookSpec) -> dict[str, TensorLayout]:
        rows, cols = matrix_shape(shape)
        _, books = codebook_count(rows, spec)
        return {
            "codebook": TensorLayout((books, 1 << spec.bits), DTYPES[spec.centroid_dtype]),
            "indices": TensorLayout((packed_nbytes(rows * cols, spec.bits),), torch.uint8),
        }

    def row_unit(self, spec: CodebookSpec) -> int | None:
        # blocks of whole codebooks, each ending its index stream on a byte; one codebook: no blocks
        return None if spec.group_rows is None else math.lcm(8, spec.group_rows)

    def value_bits(self, spec: CodebookSpec) -> float:
        return float(spec.bits)

    def tags(self, spec: CodebookSpec) -> list[str]:
        return ["kmeans-codebook"]

    def information_bits(self, shape, spec: CodebookSpec) -> float:
        rows, cols = matrix_shape(shape)
        return rows * cols * spec.bits + side_bits(self.layout(shape, spec))

    def fake(self, spec: CodebookSpec, weight, options: FakeOptions) -> CodebookFake:
        return CodebookFake(spec, weight)
