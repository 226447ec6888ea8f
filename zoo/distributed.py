"""Data-parallel runs under the launchers users already have (`torchrun`, `accelerate launch`): PyTorch's
process group (gloo on CPU, NCCL on CUDA) and DDP through transformers' Trainer; zoo builds no engine of its own.

A launcher starts one process per rank and tells each its place in the environment (WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR/PORT). Without one, WORLD_SIZE is unset and everything here is a no-op: one process.
Rank 0 alone writes (the teacher, the packed output, the card) and measures; `on_main` runs such a step on rank 0
and hands every rank its result, or rank 0's error, so that all ranks leave a step the same way. Ranks wait for
each other at most ZOO_DDP_TIMEOUT seconds (default 1800, torch's own) in any one collective; a rank that dies
closes its connections, and the others fail at once rather than after the timeout (a launcher also stops the
rest when one process exits with an error)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from .errors import RankFailed, ZooError

T = TypeVar("T")
TIMEOUT_ENV = "ZOO_DDP_TIMEOUT"
DIGEST_ENV = "ZOO_TEST_DIGEST_DIR"  # tests only: each rank writes a digest of the trained student there


def world_size() -> int:
    """Processes in the job, as the launcher set it (1 without one)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def launched() -> bool:
    """Was this process started as one of several by torchrun / accelerate launch?"""
    return world_size() > 1


def is_main() -> bool:
    """The rank that writes and prints: rank 0, or the only process."""
    return rank() == 0


def timeout_s() -> float:
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV, "1800")))
    except ValueError:
        return 1800.0


def backend_for(device: str) -> str:
    """gloo for CPU training, NCCL when the processes train on CUDA (`--device cuda`, or `auto` with a GPU)."""
    import torch

    return "nccl" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "gloo"


def setup(device: str = "cpu") -> str | None:
    """Join the launcher's process group (once per process; Trainer and accelerate then use it). The backend's
    name, or None when this is the only process."""
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = backend_for(device)
        if backend == "nccl":
            if not torch.cuda.is_available():
                raise ZooError("--device cuda was asked for, but torch sees no CUDA device", hint="use --device cpu")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    return str(dist.get_backend())


def _group_ready() -> bool:
    import torch.distributed as dist

    return launched() and dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Every rank waits here for the others (a no-op for one process)."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` on rank 0 only; every rank returns its result (pickled and broadcast). When `fn` fails on rank 0
    the others raise RankFailed, so no rank goes on alone, and rank 0 raises its own error."""
    if not _group_ready():
        return fn()
    import torch.distributed as dist

    if is_main():
        try:
            result = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # tell the others; a peer already gone must not hide the error
                dist.broadcast_object_list([("error", f"{type(exc).__name__}: {exc}")], src=0)
            raise
        dist.broadcast_object_list([("ok", result)], src=0)
        dist.barrier()  # every rank has it: the step is over for all
        return result
    box: list = [None]
    dist.broadcast_object_list(box, src=0)
    status, payload = box[0]
    if status != "ok":
        raise RankFailed(f"rank 0 failed, so rank {rank()} stops too: {payload}")
    dist.barrier()
    return payload


# how gloo and NCCL say that a peer is gone (killed, crashed) or silent past the timeout
_PEER_GONE = ("closed by peer", "reset by peer", "Broken pipe", "remote worker", "imed out", "communicator was aborted")


def lost_peer(exc: BaseException) -> bool:
    """Did `exc` come out of a collective of a launched job (torch.distributed's, or DDP's gradient all-reduce
    inside backward) because a peer was killed, crashed or hung? Any other error is a bug to show in full."""
    if not launched() or not isinstance(exc, RuntimeError):
        return False
    import torch.distributed as dist

    return isinstance(exc, getattr(dist, "DistNetworkError", ())) or any(sign in str(exc) for sign in _PEER_GONE)


def all_reduce_mean_(tensors: list) -> None:
    """Average `tensors` in place over the ranks (their gradients of the global batch's mean loss)."""
    if not _group_ready() or not tensors:
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(part.reshape(t.shape).to(t.dtype))


def write_digest(model, extra: dict | None = None) -> None:
    """Tests only (ZOO_TEST_DIGEST_DIR set): write the sha256 of this rank's trained weights and buffers (and of
    `extra` tensors), so a test can check that every rank ends with the same student."""
    where = os.environ.get(DIGEST_ENV)
    if not where:
        return
    import hashlib
    from pathlib import Path

    import torch

    h = hashlib.sha256()
    items = sorted({**model.state_dict(), **(extra or {})}.items())
    for name, tensor in items:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    Path(where).mkdir(parents=True, exist_ok=True)
    (Path(where) / f"rank{rank()}.sha256").write_text(f"{h.hexdigest()} {len(items)}\n")
