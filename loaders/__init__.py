"""Loading zoo checkpoints: dense conversion now; runtime modules and the transformers
quantizer arrive with the loader work (issue 3). Imports formats only, never zoo or cards."""

from .unpack import unpack

__all__ = ["unpack"]
