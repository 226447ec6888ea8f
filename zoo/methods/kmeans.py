"""k-means codebooks during training: fixed assignments, fine-tuned centroids (Deep Compression).

At the start each codebook's centroids come from the codec's own k-means and every weight is
assigned to its nearest centroid; training then updates only the centroids (each one's gradient is
the sum of its members' gradients). Centroids pass through their storage dtype in the forward
pass, so the exported codebook holds exactly the trained values."""

from __future__ import annotations

import torch
from torch import nn

from zoo.formats.codecs.base import round_to_dtype
from zoo.formats.codecs.codebook import codebook_count, kmeans_1d, nearest, row_blocks
from zoo.formats.spec import CodebookSpec

from .quantize import stored


class CodebookFake(nn.Module):
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
        self.register_buffer("index", torch.cat([i.reshape(-1, cols) for i in index]).to(torch.int16))
        self.register_buffer("book_of_row", (torch.arange(rows) // per).clamp(max=count - 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        books = stored(self.centroids, self.spec.centroid_dtype)
        values = books[self.book_of_row.unsqueeze(1), self.index.long()]
        # the latent weight is unused: assignments are fixed; keep it in the graph with zero gradient
        return (values + 0.0 * w.reshape(values.shape)).reshape(w.shape).to(w.dtype)
