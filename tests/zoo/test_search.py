"""The ratio-budget search: the knapsack is exact, the target is met, the choice is what gets stored, and an
unreachable target fails before anything is measured or trained. Tiny random BERT (structure only)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from zoo.formats import Checkpoint

from tests.conftest import DATA
from zoo.errors import RecipeError
from zoo.recipes import load_recipe
from zoo.search import Budget, Target, candidates, check_reachable, choose

RT = str(DATA / "rotten_tomatoes")


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_is_exact_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, c = rng.integers(2, 6), rng.integers(2, 5)
    costs = rng.integers(1, 50, size=(n, c)).astype(float) * 1000  # multiples of the DP unit: no rounding
    losses = rng.random((n, c))
    budget = int(costs.min(axis=1).sum() + rng.random() * (costs.max(axis=1).sum() - costs.min(axis=1).sum()))
    best = min((combo for combo in itertools.product(range(c), repeat=n)
                if sum(costs[i, j] for i, j in enumerate(combo)) <= budget),
               key=lambda combo: sum(losses[i, j] for i, j in enumerate(combo)))
    got = choose(costs, losses, budget, resolution=budget)  # unit 1 byte: exact
    assert sum(costs[i, j] for i, j in enumerate(got)) <= budget
    assert sum(losses[i, j] for i, j in enumerate(got)) == pytest.approx(sum(losses[i, j] for i, j in enumerate(best)))


def test_coarse_knapsack_never_exceeds_the_budget():
    rng = np.random.default_rng(0)
    costs = rng.integers(1000, 100000, size=(40, 9)).astype(float)
    losses = rng.random((40, 9))
    budget = int(costs.mean(axis=1).sum())
    got = choose(costs, losses, budget, resolution=100)
    assert sum(costs[i, j] for i, j in enumerate(got)) <= budget


def test_candidates_are_bits_times_patterns():
    spec = load_recipe("search").search
    described = [c.describe() for c in candidates(spec)]
    assert len(described) == 9 and "int8 g128 sym" in described and "1:4 + int2 g128 sym" in described


def test_unreachable_target_is_refused_with_the_best_possible_ratio():
    spec = load_recipe("search").search.model_copy(update={"target_ratio": 100})
    target = Target("encoder.layer.0.attention.self.query", (384, 384))
    fp32 = 4 * 384 * 384
    with pytest.raises(RecipeError, match=r"target ratio 100x cannot be reached: the smallest candidates for these 1 "
                                          r"modules give a checkpoint 3\d\.\d+x smaller") as caught:
        check_reachable([target], spec, Budget(reference_nbytes=fp32, fixed_nbytes=0, target_ratio=100))
    assert "embeddings" in caught.value.hint
    # what the search leaves to others counts against the whole file: half of it fixed halves what is reachable
    with pytest.raises(RecipeError, match=r"give a checkpoint 1\.\d+x smaller"):
        check_reachable([target], spec.model_copy(update={"target_ratio": 3}),
                        Budget(reference_nbytes=2 * fp32, fixed_nbytes=fp32, target_ratio=3))


def _manifest(path):
    return Checkpoint.open(path).manifest


def test_post_training_search_meets_the_target_and_stores_its_choice(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "searched"
    result = run_cli("compress", tiny_bert_dir, "--recipe", "search", "--target-ratio", "9", "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    m = _manifest(out)
    record = m.recipe.spec["searched"]
    # the whole checkpoint meets the target, and the search's estimate of it errs on the safe side
    assert m.sizes.checkpoint_ratio >= 9 and record["achieved_ratio"] >= 9
    assert record["estimated_nbytes"] >= m.sizes.checkpoint_nbytes
    assert record["achieved_ratio"] == pytest.approx(m.sizes.source_nbytes / record["estimated_nbytes"], rel=1e-3)
    assert record["measure"].startswith("1 - cosine") and "sample sentences" in record["measure"]
    # embeddings and the pooler are items of the knapsack like the block linears
    assert set(record["modules"]) == set(m.modules) and "embeddings.word_embeddings" in m.modules
    for name, choice in record["modules"].items():  # what the search chose is what was stored
        assert m.modules[name].codec.describe() == choice["codec"] and m.modules[name].nbytes == choice["nbytes"]
    card = (out / "README.md").read_text()
    assert "ratio-budget search" in card and "loss increase (search)" in card


def test_search_progress_has_real_units_and_log_lines_without_a_terminal(run_cli, tiny_bert_dir, tmp_path, monkeypatch):
    """An 11-minute search once showed a bar counting "bytes" and printed nothing outside a terminal."""
    import re

    monkeypatch.setenv("ZOO_LOG_EVERY", "0")  # a line per step here; every 30 s in real use
    result = run_cli("compress", tiny_bert_dir, "--recipe", "search", "--target-ratio", "9", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("search: ")]
    total = int(re.match(r"search: measuring ([\d,]+) \(module, setting\) pairs$", lines[0]).group(1).replace(",", ""))
    assert total > 10 and len(lines) == total + 1
    assert re.fullmatch(r"search: 1/[\d,]+ \(module, setting\) pairs measured, \d+s elapsed, about \d+(m\d\ds|s) left",
                        lines[1]), lines[1]
    assert re.fullmatch(rf"search: {total:,}/{total:,} \(module, setting\) pairs measured, \d+s elapsed", lines[-1])
    assert "bytes" not in result.stderr


def test_search_bad_input_fails_before_any_output(run_cli, tiny_bert_dir, tmp_path):
    for args, fragment in [
        (["--recipe", "search", "--target-ratio", "200"], "cannot be reached"),
        (["--recipe", "4bit", "--target-ratio", "12"], "--target-ratio applies to search recipes"),
    ]:
        result = run_cli("compress", tiny_bert_dir, *args, "--out", tmp_path / "x")
        assert result.exit_code == 1 and fragment in result.stderr, result.stderr
        assert not (tmp_path / "x").exists()
    packed = run_cli("pack", tiny_bert_dir, "--recipe", "search", "--out", tmp_path / "p")
    assert packed.exit_code == 1 and "cannot pack" in packed.stderr
    trained = run_cli("compress", tiny_bert_dir, "--recipe", "search", "--target-ratio", "200", "--task",
                      "rotten_tomatoes", "--data", RT, "--limit", "32", "--out", tmp_path / "t")
    assert trained.exit_code == 1 and "cannot be reached" in trained.stderr
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.work" / "teacher").exists()  # no teacher trained


def test_search_with_a_task_measures_distance_to_the_teacher_then_trains(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "searched-rt"
    result = run_cli("compress", tiny_bert_dir, "--recipe", "search", "--target-ratio", "10", "--task",
                     "rotten_tomatoes", "--data", RT, "--limit", "64", "--epochs", "1", "--teacher-epochs", "1",
                     "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    m = _manifest(out)
    record = m.recipe.spec["searched"]
    assert record["measure"].startswith("KL to the dense model's outputs on 64 rotten_tomatoes training examples")
    # a distance to the dense model: no setting is credited with a negative change (labelled-loss noise)
    assert all(c["loss_increase"] >= -1e-6 for c in record["modules"].values())
    assert m.sizes.checkpoint_ratio >= 10
    assert any(r.role == "compressed" and r.split == "test" for r in m.evaluation)
    assert math.isfinite(record["total_loss_increase"])
    json.dumps(record)  # the record is plain data in the manifest


def test_search_with_a_task_and_no_training_evaluates_the_searched_teacher(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "searched-0"
    result = run_cli("compress", tiny_bert_dir, "--recipe", "search", "--target-ratio", "10", "--task",
                     "rotten_tomatoes", "--data", RT, "--limit", "64", "--epochs", "0", "--teacher-epochs", "1",
                     "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    m = _manifest(out)
    assert m.training.epochs == 0 and m.training.steps == 0
    assert m.recipe.spec["searched"]["measure"].startswith("KL to the dense model's outputs on 64 rotten_tomatoes")
    assert m.sizes.checkpoint_ratio >= 10 and any(r.role == "compressed" for r in m.evaluation)
    refused = run_cli("compress", tiny_bert_dir, "--recipe", "block-prune", "--task", "rotten_tomatoes", "--data", RT,
                      "--epochs", "0", "--out", tmp_path / "pruned")
    assert refused.exit_code == 1 and "only training measures" in refused.output
    assert not (tmp_path / "pruned").exists() and not (tmp_path / "pruned.work").exists()
