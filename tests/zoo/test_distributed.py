"""Data-parallel fine-tuning under the launchers users have: 2-process CPU jobs (gloo) under torchrun, end to end,
on a tiny BERT and on the real MiniLM (a --limit subset), and a job that loses a rank. Each rank writes a digest
of its trained student (ZOO_TEST_DIGEST_DIR, read by zoo.distributed.write_digest) so that the ranks' weights,
buffers (N:M masks, k-means assignments, pruning gates) and movement scores are compared, not assumed.

The quick tests cover the pieces one process can check: every codec's training fake under DDP, the pruning
gate's gradient after a device move, checkpoints cut short, the global batch, old manifests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from zoo.formats import Checkpoint
from zoo.formats.manifest import TrainingRecord

from tests.conftest import DATA, leftovers, minilm_path
from tests.formats.test_codec_registry import CASES, SHAPE, weight
from zoo import distributed
from zoo.recipes import load_recipe

RT = str(DATA / "rotten_tomatoes")


# ----------------------------------------------------------------------------------------- one process


@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group: DDP syncs parameters and buffers through it as it would between ranks."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("spec", CASES)
def test_every_training_fake_trains_under_ddp(spec, gloo_group):
    """DDP broadcasts every parameter and buffer at the start: each fake's must be of a dtype gloo (and NCCL)
    carry (k-means indices were int16, which neither does)."""
    from torch.nn.utils import parametrize
    from zoo.formats.codecs import FakeOptions, fake_for

    layer = torch.nn.Linear(SHAPE[1], SHAPE[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight())
    parametrize.register_parametrization(layer, "weight", fake_for(spec, layer.weight, FakeOptions()), unsafe=True)
    ddp = torch.nn.parallel.DistributedDataParallel(layer, find_unused_parameters=True)
    ddp(torch.randn(3, SHAPE[1])).sum().backward()


def test_pruning_gates_keep_their_gradient_when_the_model_moves():
    """Trainer moves the model to "cpu:0" under a launcher (to cuda:N on GPUs): a copied buffer that requires grad
    is no leaf, so its .grad, the movement score's step, would stay None."""
    from zoo.methods.prune import ColumnGate

    gate = ColumnGate(3, 2)
    gate.to(torch.device("cpu", 0))
    assert gate.gate.is_leaf
    gate(torch.ones(4, 6)).sum().backward()
    assert gate.gate.grad is not None and gate.gate.grad.shape == (3,)


def test_resume_takes_the_last_complete_checkpoint(tmp_path):
    from zoo.train.arguments import last_checkpoint

    for step, complete in ((4, True), (8, True), (12, False)):  # 12: a killed process stopped it mid-save
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert last_checkpoint(tmp_path / "none") is None


def test_the_batch_is_global_and_splits_evenly(monkeypatch):
    from zoo.tasks import TaskError
    from zoo.train.arguments import per_device_batch

    assert per_device_batch(32) == 32
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert per_device_batch(32) == 8
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(TaskError, match="does not split evenly over 3 processes"):
        per_device_batch(32)


def test_training_records_without_the_job_fields_still_load():
    old = {
        "task": "rt",
        "dataset": "rt",
        "base_model": "m",
        "teacher": "t",
        "epochs": 1.0,
        "steps": 4,
        "seconds": 1.0,
        "device": "cpu",
    }
    record = TrainingRecord.model_validate(old)
    assert record.world_size is None and record.backend is None and record.global_batch_size is None
    new = TrainingRecord.model_validate({**old, "world_size": 2, "backend": "gloo", "global_batch_size": 32})
    assert (new.world_size, new.backend, new.global_batch_size) == (2, "gloo", 32)
    with pytest.raises(ValueError, match="world_size"):
        TrainingRecord.model_validate({**old, "world_size": 0})


def test_commands_that_do_not_train_refuse_a_launcher(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_cli("unpack", tmp_path, "--out", tmp_path / "x")
    assert result.exit_code == 1 and "runs as one process" in result.stderr and not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, NCCL would wait for a second rank")
def test_cuda_without_a_gpu_is_one_line_before_any_process_group(monkeypatch):
    from zoo.errors import ZooError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ZooError, match="torch sees no CUDA device"):
        distributed.setup("cuda")
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("auto") == "gloo"


def test_one_process_runs_main_steps_itself():
    assert not distributed.launched() and distributed.on_main(lambda: 7) == 7 and distributed.setup() is None


# ----------------------------------------------------------------------------------------- two processes


def torchrun(*args, env: dict | None = None, wait: bool = True, timeout: float = 300):
    """`torchrun --standalone --nproc_per_node 2 -m zoo ARGS` (a free port; one thread per process)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "zoo"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("WORLD_SIZE", None)
    cmd += [str(a) for a in args]
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def digests(where: Path) -> list[str]:
    """Each rank's digest of its trained student: both ranks wrote one."""
    files = sorted(where.glob("rank*.sha256"))
    assert [f.name for f in files] == ["rank0.sha256", "rank1.sha256"]
    return [f.read_text().split()[0] for f in files]


def assert_one_job(result, out: Path, global_batch: int) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Compressed ") == 1  # rank 0 alone reports
    training = Checkpoint.open(out).manifest.training
    assert training is not None
    assert (training.world_size, training.backend, training.global_batch_size) == (2, "gloo", global_batch)
    assert leftovers(out.parent) == []


@pytest.fixture(scope="module")
def tiny_job(tiny_bert_dir, tmp_path_factory):
    """A tiny BERT compressed with block pruning by two processes: its teacher fine-tuned first, also by both."""
    root = tmp_path_factory.mktemp("ddp-tiny")
    out = root / "tiny-pruned"
    result = torchrun(
        *("compress", tiny_bert_dir, "--recipe", "block-prune", "--task", "rotten_tomatoes", "--data", RT),
        *("--limit", 128, "--epochs", 1, "--teacher-epochs", 1, "--batch-size", 16, "--out", out),
        env={distributed.DIGEST_ENV: str(root / "digest")},
    )
    return root, out, result


@pytest.mark.slow
def test_a_two_process_job_writes_one_output(tiny_job):
    root, out, result = tiny_job
    assert_one_job(result, out, 16)
    assert sorted(p.name for p in root.iterdir()) == ["digest", "tiny-pruned", "tiny-pruned.work"]
    assert sorted(p.name for p in (root / "tiny-pruned.work").iterdir()) == ["teacher"]  # kept for reuse
    assert "on cpu x 2 processes (gloo), 16 examples per step" in (out / "README.md").read_text()  # the card
    mark = json.loads((root / "tiny-pruned.work" / "teacher" / ".zoo-output").read_text())
    assert mark["training"]["world_size"] == 2 and mark["training"]["global_batch_size"] == 32


@pytest.mark.slow
def test_both_ranks_end_with_the_same_student_and_movement_scores(tiny_job):
    root, _, result = tiny_job
    assert result.returncode == 0
    first, second = digests(root / "digest")
    assert first == second


@pytest.mark.slow
def test_the_result_loads_and_evaluates_under_torchrun(tiny_job):
    _, out, _ = tiny_job
    manifest = Checkpoint.open(out).manifest
    recorded = next(r for r in manifest.evaluation if (r.role, r.split, r.metric) == ("compressed", "test", "accuracy"))
    result = torchrun("eval", out, "--task", "rotten_tomatoes", "--data", RT, "--limit", 128, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # one report: rank 0's
    assert report["n_examples"] == 128 and report["metrics"]["accuracy"] == pytest.approx(recorded.value, abs=1e-6)


@pytest.mark.slow
def test_minilm_trains_data_parallel(tmp_path):
    """The real all-MiniLM-L6-v2, fine-tuned as a teacher and compressed to 4bit-2of4 (N:M masks recomputed during
    training) by two processes on 64 sentences per split."""
    out = tmp_path / "minilm-rt"
    result = torchrun(
        *("compress", minilm_path(), "--recipe", "4bit-2of4", "--task", "rotten_tomatoes", "--data", RT),
        *("--limit", 64, "--epochs", 1, "--teacher-epochs", 1, "--batch-size", 16, "--out", out),
        env={distributed.DIGEST_ENV: str(tmp_path / "digest")},
    )
    assert_one_job(result, out, 16)
    first, second = digests(tmp_path / "digest")
    assert first == second
    ckpt = Checkpoint.open(out)
    for name, entry in ckpt.manifest.modules.items():
        if entry.encoder_linear:
            assert int((ckpt.decode(name) != 0).reshape(-1, 4).sum(1).max()) <= 2, name


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    import psutil  # accelerate's dependency

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_cleanly_and_resume_continues(tiny_job, tmp_path):
    """SIGKILL one rank after the first checkpoint: the other exits within seconds, non-zero, and nothing appears
    at OUT; --resume then continues the two-process run from that checkpoint. The recipe's k-means assignments
    and learned clip values must also end equal on both ranks."""
    root, _, first = tiny_job
    assert first.returncode == 0
    raw = load_recipe("kmeans-4bit").model_dump(mode="json")
    raw["training"]["clip"] = "learned"
    recipe = tmp_path / "kmeans-learned.yaml"
    recipe.write_text(json.dumps(raw))
    out = tmp_path / "tiny-kmeans"
    args = (
        *("compress", root / "tiny-pruned.work" / "teacher", "--recipe", recipe, "--task", "rotten_tomatoes"),
        *("--data", RT, "--limit", 128, "--epochs", 3, "--batch-size", 16, "--out", out),
    )
    env = {distributed.DIGEST_ENV: str(tmp_path / "digest")}
    job = torchrun(*args, env=env, wait=False)
    saved = tmp_path / "tiny-kmeans.work" / "student"
    start = time.monotonic()
    while not any(saved.glob("checkpoint-*/trainer_state.json")):
        assert job.poll() is None, job.communicate()[0][-3000:]
        assert time.monotonic() - start < 240, "no checkpoint was written"
        time.sleep(0.02)
    os.kill(_rank_pid(job, 1), signal.SIGKILL)
    killed = time.monotonic()
    output, _ = job.communicate(timeout=120)
    assert job.returncode != 0 and time.monotonic() - killed < 30
    assert "another process of this job stopped" in output  # rank 0's one line, not a traceback
    assert not out.exists() and leftovers(tmp_path) == []

    resumed = torchrun(*args, "--resume", env=env)
    assert_one_job(resumed, out, 16)
    # 8 steps an epoch (128 examples, 16 a step): the first checkpoint, or the second where the kill came late
    assert re.search(r"resumed +from the checkpoint at step (8|16)\n", resumed.stdout), resumed.stdout
    assert Checkpoint.open(out).manifest.training.steps == 24
    first_rank, second_rank = digests(tmp_path / "digest")
    assert first_rank == second_rank
    assert not (tmp_path / "tiny-kmeans.work").exists()
