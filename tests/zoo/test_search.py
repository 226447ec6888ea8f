"""The ratio-budget search: the knapsack is exact, the target is met, the choice is what gets stored, and an
unreachable target fails before anything is measured or trained. Tiny random BERT (structure only)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from zoo.formats import Checkpoint

from tests.conftest import DATA
from zoo.errors import RecipeError
from zoo.recipes import load_recipe
from zoo.search import Budget, Target, candidates, check_reachable, choose, fidelity_loss, measure, searched_modules

RT = str(DATA / "rotten_tomatoes")


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_is_exact_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, c = rng.integers(2, 6), rng.integers(2, 5)
    costs = rng.integers(1, 50, size=(n, c)).astype(float) * 1000  # multiples of the DP unit: no rounding
    losses = rng.random((n, c))
    budget = int(costs.min(axis=1).sum() + rng.random() * (costs.max(axis=1).sum() - costs.min(axis=1).sum()))
    best = min(
        (
            combo
            for combo in itertools.product(range(c), repeat=n)
            if sum(costs[i, j] for i, j in enumerate(combo)) <= budget
        ),
        key=lambda combo: sum(losses[i, j] for i, j in enumerate(combo)),
    )
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
    with pytest.raises(
        RecipeError,
        match=r"target ratio 100x cannot be reached: the smallest candidates for these 1 "
        r"modules give a checkpoint 3\d\.\d+x smaller",
    ) as caught:
        check_reachable([target], spec, Budget(reference_nbytes=fp32, fixed_nbytes=0, target_ratio=100))
    assert "embeddings" in caught.value.hint
    # what the search leaves to others counts against the whole file: half of it fixed halves what is reachable
    with pytest.raises(RecipeError, match=r"give a checkpoint 1\.\d+x smaller"):
        check_reachable(
            [target],
            spec.model_copy(update={"target_ratio": 3}),
            Budget(reference_nbytes=2 * fp32, fixed_nbytes=fp32, target_ratio=3),
        )


def _tiny_measuring(model_dir, edit=None):
    """A tiny BERT of `model_dir`'s shape but 4 layers (changed by `edit`, if given), weights drawn ten times wider than
    BERT's initialiser draws them (at 0.02 its attention is near uniform: a change to query or key moves the
    output by float noise), the built-in search recipe's targets in it, int8, int4 and int2 candidates, and its
    fidelity loss on 16 built-in sentences in two padded batches."""
    from transformers import BertConfig, BertModel

    from zoo.tasks.fidelity import calibration_texts, text_batch

    torch.manual_seed(0)
    model = BertModel(BertConfig.from_pretrained(model_dir, initializer_range=0.2, num_hidden_layers=4)).eval()
    if edit is not None:
        edit(model)
    recipe = load_recipe("search")
    texts, _ = calibration_texts(None, 16)
    batches = [text_batch(model_dir, texts[i : i + 8], max_length=32) for i in (0, 8)]
    assert any(bool((b["attention_mask"] == 0).any()) for b in batches)  # padding the block errors must skip
    loss, _ = fidelity_loss(model, batches)
    cands = candidates(recipe.search.model_copy(update={"bits": [8, 6, 4, 3, 2], "patterns": ["dense"]}))
    return model, searched_modules(model, recipe), cands, loss


def test_block_measure_ranks_coarser_settings_worse_and_is_the_model_measure_where_it_calibrates(tiny_bert_dir):
    """The block measure (each block alone on its cached dense inputs, put into loss units by three settings per
    module measured end to end) against every pair measured end to end, on a tiny random BERT."""
    model, targets, cands, loss = _tiny_measuring(tiny_bert_dir)
    assert [c.describe() for c in cands] == [f"int{b} g128 sym" for b in (8, 6, 4, 3, 2)]
    _, block = measure(model, targets, cands, loss, how="block")
    _, full = measure(model, targets, cands, loss, how="model")
    names = [t.name for t in targets]
    for i, name in enumerate(names):
        if name == "pooler.dense":  # the encoder's loss never sees the pooler: no increase either way
            assert block[i].tolist() == [0.0] * 5 and full[i].tolist() == [0.0] * 5
            continue
        # fewer bits move every other module's block further from the dense one
        assert (np.diff(full[i]) > 0).all() and (np.diff(block[i]) > 0).all() and block[i, 0] > 0, name
        if name.startswith(("encoder.layer.0.", "encoder.layer.1.")):
            # the quartiles by block error are measured end to end, and there the estimate is that measurement;
            # the ends are estimated from them
            assert block[i, 1:4] == pytest.approx(full[i, 1:4], rel=1e-9), (name, block[i], full[i])
            assert block[i, 0] != full[i, 0] and block[i, 4] != full[i, 4]
        else:  # embeddings; and blocks 2 and 3, where 5 losses from there to the end cost no more than the
            assert block[i].tolist() == full[i].tolist()  # block 5 times and 3 losses: end to end
    assert len(names) == 4 * 6 + 3 + 1  # four blocks' linears, three embeddings, the pooler


def test_block_errors_become_loss_increases_through_the_measured_settings():
    from zoo.search import _calibrations, _estimate

    errors = np.array([16.0, 1.0, 0.0, 4.0, 2.0, 8.0])
    assert _calibrations(errors) == [4, 3, 5]  # quartiles of the settings that change the block: 2, 4, 8
    assert _calibrations(np.zeros(3)) == []
    got = _estimate(errors, {4: 10.0, 5: 90.0})
    # measured where measured; log-log linear between (2 -> 10, 8 -> 90: 4 -> 30); proportional beyond; 0 stays 0
    assert got.tolist() == pytest.approx([180.0, 5.0, 0.0, 30.0, 10.0, 90.0])
    # a measured increase at or below zero (float noise, or a loss that never sees the module) is none
    assert _estimate(errors, {4: -1e-9}).tolist() == [0.0] * 6
    assert _estimate(errors, {4: -1e-9, 5: 90.0}).tolist() == pytest.approx([180.0, 11.25, 0.0, 45.0, 0.0, 90.0])


def test_block_measure_leaves_what_it_cannot_isolate_to_the_model_measure(tiny_bert_dir):
    """Modules outside every block (embeddings, pooler) are measured end to end, and so is a weight shared with
    another module (here one layer's FFN output tied to the next one's): run alone, its block would miss the
    change the other copy makes."""
    from zoo.search import _Record

    def tie(model):
        model.encoder.layer[1].output.dense.weight = model.encoder.layer[0].output.dense.weight

    model, targets, cands, loss = _tiny_measuring(tiny_bert_dir, tie)
    record = _Record(model, targets, loss, blocks_alone=True)
    assert record.blocks_of["encoder.layer.1.attention.self.query"].module is model.encoder.layer[1]
    isolated = {t.name for t in targets if t.name.startswith("encoder.layer.")} - {
        "encoder.layer.0.output.dense",
        "encoder.layer.1.output.dense",
    }
    assert set(record.blocks_of) == isolated
    some = [
        t
        for t in targets
        if t.name
        in ("embeddings.word_embeddings", "encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense")
    ]
    assert [t.name for t in some][1] == "encoder.layer.0.intermediate.dense"
    _, block = measure(model, some, cands, loss, how="block")
    _, full = measure(model, some, cands, loss, how="model")
    assert block[0].tolist() == full[0].tolist() and block[2].tolist() == full[2].tolist()  # end to end
    assert block[1].tolist() != full[1].tolist() and block[1, 2] == pytest.approx(full[1, 2], rel=1e-9)
    assert (full > 0).all()


def test_search_measure_is_validated_by_the_recipe_schema(tmp_path):
    assert load_recipe("search").search.measure == "block"
    from zoo.recipes import builtin_text

    text = builtin_text("search")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("measure: block}", "measure: fast}"))
    with pytest.raises(RecipeError, match="measure"):
        load_recipe(bad)
    good = tmp_path / "good.yaml"
    good.write_text(text.replace("measure: block}", "measure: model}"))
    assert load_recipe(good).search.measure == "model"


def test_manifest_records_which_measure_the_search_used(run_cli, tiny_bert_dir, tmp_path):
    from zoo.recipes import builtin_text

    recipe = tmp_path / "search-model.yaml"
    recipe.write_text(builtin_text("search").replace("measure: block}", "measure: model}"))
    result = run_cli("compress", tiny_bert_dir, "--recipe", recipe, "--target-ratio", "9", "--out", tmp_path / "m")
    assert result.exit_code == 0, result.stderr
    measured = _manifest(tmp_path / "m").recipe.spec["searched"]["measure"]
    assert measured.startswith("1 - cosine") and measured.endswith(
        "measure: model (every module and setting end to end)"
    )


def _manifest(path):
    return Checkpoint.open(path).manifest


@pytest.mark.slow
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
    assert "; measure: block (each module's block run alone" in record["measure"]  # the default
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
    assert re.fullmatch(
        r"search: 1/[\d,]+ \(module, setting\) pairs measured, \d+s elapsed, about \d+(m\d\ds|s) left", lines[1]
    ), lines[1]
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
    trained = run_cli(
        "compress",
        tiny_bert_dir,
        "--recipe",
        "search",
        "--target-ratio",
        "200",
        "--task",
        "rotten_tomatoes",
        "--data",
        RT,
        "--limit",
        "32",
        "--out",
        tmp_path / "t",
    )
    assert trained.exit_code == 1 and "cannot be reached" in trained.stderr
    assert not (tmp_path / "t").exists() and not (tmp_path / "t.work" / "teacher").exists()  # no teacher trained


@pytest.mark.slow
def test_search_with_a_task_measures_distance_to_the_teacher_then_trains(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "searched-rt"
    result = run_cli(
        "compress",
        tiny_bert_dir,
        "--recipe",
        "search",
        "--target-ratio",
        "10",
        "--task",
        "rotten_tomatoes",
        "--data",
        RT,
        "--limit",
        "64",
        "--epochs",
        "1",
        "--teacher-epochs",
        "1",
        "--out",
        out,
    )
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


@pytest.mark.slow
def test_search_with_a_task_and_no_training_evaluates_the_searched_teacher(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "searched-0"
    result = run_cli(
        "compress",
        tiny_bert_dir,
        "--recipe",
        "search",
        "--target-ratio",
        "10",
        "--task",
        "rotten_tomatoes",
        "--data",
        RT,
        "--limit",
        "64",
        "--epochs",
        "0",
        "--teacher-epochs",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    m = _manifest(out)
    assert m.training.epochs == 0 and m.training.steps == 0
    assert m.recipe.spec["searched"]["measure"].startswith("KL to the dense model's outputs on 64 rotten_tomatoes")
    assert m.sizes.checkpoint_ratio >= 10 and any(r.role == "compressed" for r in m.evaluation)
    refused = run_cli(
        "compress",
        tiny_bert_dir,
        "--recipe",
        "block-prune",
        "--task",
        "rotten_tomatoes",
        "--data",
        RT,
        "--epochs",
        "0",
        "--out",
        tmp_path / "pruned",
    )
    assert refused.exit_code == 1 and "only training measures" in refused.output
    assert not (tmp_path / "pruned").exists() and not (tmp_path / "pruned.work").exists()
