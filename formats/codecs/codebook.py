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

import torch

from ..bitpack import pack_bits, packed_nbytes, unpack_bits
from ..spec import CodebookSpec
from .base import DTYPES, TensorLayout, as_matrix, matrix_shape, round_to_dtype, row_codes

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

        return torch.from_numpy(np.sort(x.numpy(), axis=1, kind="stable"))
    return x.sort(dim=1).values


def kmeans_1d(values: torch.Tensor, k: int, iterations: int) -> torch.Tensor:
    """Batched 1-D k-means: `values` (batch, n) -> ascending centroids (batch, k), float32.

    In one dimension the nearest centroid is found by binary search against the midpoints of
    the sorted centroids, so each iteration costs O(n log k) with no (n, k) distance matrix."""
    x = _sorted(values.to(torch.float32))
    n = x.shape[1]
    exact, fits = _distinct_or_none(x, k)
    pick = ((torch.arange(k, dtype=torch.float64, device=x.device) + 0.5) / k * n).long().clamp(max=n - 1)
    centroids = x[:, pick].contiguous()
    for _ in range(iterations):
        bounds = ((centroids[:, 1:] + centroids[:, :-1]) / 2).contiguous()
        sums = torch.zeros_like(centroids)
        counts = torch.zeros_like(centroids, dtype=torch.int64)
        for piece in x.split(COLUMNS, dim=1):  # in pieces: the int64 assignments of a whole table are large
            piece = piece.contiguous()
            assign = torch.searchsorted(bounds, piece)
            sums.scatter_add_(1, assign, piece)
            counts.scatter_add_(1, assign, torch.ones_like(assign))
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort(dim=1).values
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return torch.where(fits.unsqueeze(1), exact, centroids)


def nearest(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (ties to the lower index) for each value; both batched by row."""
    c = centroids.to(torch.float32).contiguous()
    k = c.shape[1]
    above = torch.searchsorted(c, values.contiguous(), right=True)
    lo = (above - 1).clamp(0, k - 1)
    hi = above.clamp(0, k - 1)
    d_lo = (values - c.gather(1, lo)).abs()
    d_hi = (values - c.gather(1, hi)).abs()
    chosen = c.gather(1, torch.where(d_hi < d_lo, hi, lo))
    return torch.searchsorted(c, chosen.contiguous())  # first of equal centroids: ties go to the lower index


def row_blocks(w: torch.Tensor, per: int):
    """(start_row, block) for full blocks of `per` rows at once, then the shorter tail block."""
    rows = w.shape[0]
    full = rows // per
    if full:
        yield 0, w[: full * per].reshape(full, -1)
    if full * per < rows:
        yield full * per, w[full * per :].reshape(1, -1)


def encode(weight: torch.Tensor, spec: CodebookSpec) -> dict[str, torch.Tensor]:
    w = as_matrix(weight)
    rows = w.shape[0]
    per, _ = codebook_count(rows, spec)
    k = 1 << spec.bits
    books, indices = [], []
    for _, block in row_blocks(w, per):
        book = round_to_dtype(kmeans_1d(block, k, spec.iterations), spec.centroid_dtype)
        books.append(book)
        # a piece at a time, each index narrowed at once (k <= 256): no int64 copy of a whole table
        indices.append(torch.cat([nearest(piece, book).to(torch.uint8) for piece in block.split(COLUMNS, dim=1)],
                                 dim=1).reshape(-1))
    return {
        "codebook": torch.cat(books),
        "indices": pack_bits(torch.cat(indices), spec.bits),
    }


def decode(tensors, spec: CodebookSpec, shape) -> torch.Tensor:
    rows, cols = matrix_shape(shape)
    per, _ = codebook_count(rows, spec)
    idx = unpack_bits(tensors["indices"], spec.bits, rows * cols).view(rows, cols).long()
    book = tensors["codebook"].to(torch.float32)
    which = (torch.arange(rows, device=book.device) // per).unsqueeze(1)
    return book[which, idx].reshape(shape)


def decode_rows(tensors, spec: CodebookSpec, shape, rows: torch.Tensor) -> torch.Tensor:
    total, cols = matrix_shape(shape)
    per, _ = codebook_count(total, spec)
    idx = row_codes(tensors["indices"], spec.bits, total, cols, rows).long()
    book = tensors["codebook"].to(torch.float32)
    return book[(rows // per).unsqueeze(1), idx]


def layout(shape, spec: CodebookSpec) -> dict[str, TensorLayout]:
    rows, cols = matrix_shape(shape)
    _, books = codebook_count(rows, spec)
    return {
        "codebook": TensorLayout((books, 1 << spec.bits), DTYPES[spec.centroid_dtype]),
        "indices": TensorLayout((packed_nbytes(rows * cols, spec.bits),), torch.uint8),
    }
