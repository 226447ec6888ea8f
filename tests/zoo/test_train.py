"""Compression-aware fine-tuning machinery on a tiny BERT and a few hundred real sentences:
the loss falls, masks stay N:M, codes stay on grid, resume continues, and the numbers written
into the manifest are the ones the stored checkpoint gets when evaluated again."""

import json
import math

import pytest
from transformers import TrainerCallback
from zoo.formats import Checkpoint, codecs
from zoo.formats.fit import check_decodes_to

from tests.conftest import DATA, leftovers
from zoo.errors import RecipeError
from zoo.recipes import load_recipe, parse_recipe
from zoo.resolve import resolve_model
from zoo.tasks import TaskError, get_task
from zoo.tasks.evaluation import run_eval
from zoo.train.finetune import finetune
from zoo.train.pipeline import compress_with_training

RT = str(DATA / "rotten_tomatoes")
LIMIT = 256


@pytest.fixture(scope="module")
def task():
    return get_task("rotten_tomatoes", RT)


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert_dir, task, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "tiny-rt"
    result = finetune(resolve_model(str(tiny_bert_dir)), task, out, epochs=2, limit=LIMIT, learning_rate=1e-3)
    assert result.path == out and not (out.parent / "tiny-rt.work").exists()
    return out


def recipe_with(name: str, **training):
    base = load_recipe(name).model_dump(mode="json")
    base["training"].update(training)
    return parse_recipe(json.dumps(base), name)


def test_finetune_writes_a_dense_classifier_with_its_tokenizer(teacher_dir, task):
    config = json.loads((teacher_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 2
    assert (teacher_dir / "tokenizer.json").is_file() and not (teacher_dir / "training_args.bin").exists()
    result = run_eval(teacher_dir, "rotten_tomatoes", data=RT, limit=64, max_length=64)
    assert result.n_examples == 64 and 0 <= result.metrics["accuracy"] <= 1 and result.max_length == 64


@pytest.fixture(scope="module")
def nm_student(teacher_dir, task, tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "tiny-2of4"
    recipe = recipe_with("4bit-2of4", epochs=3, learning_rate=1e-3, mask_interval=4)
    return compress_with_training(resolve_model(str(teacher_dir)), recipe, task, out, limit=LIMIT)


@pytest.mark.slow
def test_student_loss_falls(nm_student):
    losses = nm_student.losses
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_stored_student_is_2of4_on_the_int4_grid(nm_student):
    ckpt = Checkpoint.open(nm_student.path)
    assert len(ckpt.manifest.modules) == 12 + 3 + 1  # 2 layers x 6 linear, the embeddings, the pooler
    for name, entry in ckpt.manifest.modules.items():
        w = ckpt.decode(name)
        if entry.encoder_linear:
            assert int((w != 0).reshape(-1, 4).sum(1).max()) <= 2, name
        # decoded weights re-encode to themselves by the codec's own (absmax) rule: trained on that grid
        check_decodes_to(codecs.encode(w, entry.codec), entry.codec, w, rtol=1e-6)


def test_manifest_numbers_are_what_the_stored_checkpoint_measures(nm_student):
    m = Checkpoint.open(nm_student.path).manifest
    got = {(r.role, r.split, r.metric): r for r in m.evaluation}
    assert {
        ("teacher", "test", "accuracy"),
        ("compressed", "test", "accuracy"),
        ("compressed", "test", "teacher_agreement"),
        ("teacher", "validation", "accuracy"),
        ("compressed", "validation", "accuracy"),
    } <= set(got)
    scores = nm_student.scores  # what the run reports is what the manifest records, role by role
    assert [(role, s.split, s.metric, round(s.value, 6)) for role, s in scores.by_role()] == [
        (r.role, r.split, r.metric, r.value) for r in m.evaluation
    ]
    assert scores.agreement.metric == "teacher_agreement" and scores.compressed_test.split == "test"
    again = run_eval(nm_student.path, "rotten_tomatoes", data=RT, limit=LIMIT)
    assert again.metrics["accuracy"] == pytest.approx(got[("compressed", "test", "accuracy")].value, abs=1e-6)
    assert m.training.task == "rotten_tomatoes" and m.training.steps > 0 and m.training.teacher.endswith("tiny-rt")
    assert not (nm_student.path.parent / "tiny-2of4.work").exists()


class StopAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_run_leaves_no_output_and_resumes(teacher_dir, task, tmp_path):
    out = tmp_path / "tiny-ternary"
    recipe = recipe_with("ternary", epochs=2, learning_rate=1e-3)
    model = resolve_model(str(teacher_dir))
    with pytest.raises(KeyboardInterrupt):
        compress_with_training(model, recipe, task, out, limit=128, callbacks=lambda stage: [StopAfterFirstSave()])
    assert not out.exists() and leftovers(tmp_path) == []
    assert any((tmp_path / "tiny-ternary.work" / "student").glob("checkpoint-*"))
    result = compress_with_training(model, recipe, task, out, limit=128, resume=True)
    assert result.resumed_from_step == 4 and result.manifest.training.steps == 8  # 128 / 32 per epoch
    assert not (tmp_path / "tiny-ternary.work").exists()


def test_resume_without_a_checkpoint_starts_over_but_finetune_refuses(tiny_bert_dir, task, tmp_path):
    with pytest.raises(TaskError, match="nothing to resume"):
        finetune(resolve_model(str(tiny_bert_dir)), task, tmp_path / "t", limit=32, resume=True)


def test_layer_reduction_halves_depth_and_counts_ratio_against_the_teacher(teacher_dir, task, tmp_path):
    recipe = recipe_with("xtc-binary", keep_layers=[1], epochs=1, learning_rate=1e-3)
    result = compress_with_training(resolve_model(str(teacher_dir)), recipe, task, tmp_path / "xtc", limit=128)
    config = json.loads((result.path / "config.json").read_text())
    blocks = [e for e in result.manifest.modules.values() if e.encoder_linear]
    assert config["num_hidden_layers"] == 1 and len(blocks) == 6
    sizes = result.manifest.sizes
    assert sizes.encoder_linear_fp32_nbytes == 2 * 4 * sum(e.numel for e in blocks)
    teacher_bytes = (teacher_dir / "model.safetensors").stat().st_size
    assert sizes.source_nbytes == teacher_bytes and result.manifest.base_model.weights_nbytes == teacher_bytes
    model = __import__("zoo").from_pretrained(result.path)
    assert len(model.bert.encoder.layer) == 1


def test_layer_reduction_beyond_the_model_is_a_recipe_error(teacher_dir, task, tmp_path):
    recipe = recipe_with("xtc-binary", keep_layers=[1, 3, 5])
    with pytest.raises(RecipeError, match=r"beyond the model's 2"):
        compress_with_training(resolve_model(str(teacher_dir)), recipe, task, tmp_path / "x", limit=32)
    assert not (tmp_path / "x").exists()


def test_xtc_without_a_task_is_refused(tiny_bert_dir, tmp_path):
    from zoo.compress import write_compact

    with pytest.raises(RecipeError, match="only distillation can recover"):
        write_compact(resolve_model(str(tiny_bert_dir)), load_recipe("xtc-binary"), tmp_path / "x")


def test_teacher_without_the_task_head_is_refused(tiny_bert_dir, teacher_dir, task, tmp_path):
    with pytest.raises(TaskError, match="has no 2-label head"):
        compress_with_training(
            resolve_model(str(teacher_dir)),
            load_recipe("int8"),
            task,
            tmp_path / "x",
            teacher=str(tiny_bert_dir),
            limit=32,
        )


def test_schedule_moves_dropout_and_tightens_nm_gradually(teacher_dir, task):
    from types import SimpleNamespace

    from zoo.methods import attach, plan_modules
    from zoo.recipes.training import DropoutSchedule
    from zoo.train.distill import CompressionSchedule
    from zoo.train.finetune import load_for_task

    model = load_for_task(teacher_dir, task)
    recipe = load_recipe("2of4")
    attach(model, plan_modules(model, recipe), recipe.training)
    schedule = CompressionSchedule(model, dropout=DropoutSchedule(start=0.2, end=0.0), mask_interval=0, prune_ramp=0.5)
    fake = model.bert.encoder.layer[0].attention.self.query.parametrizations.weight[0]
    seen = []
    for step in range(0, 101, 10):
        schedule.on_step_begin(None, SimpleNamespace(global_step=step, max_steps=100), None)
        seen.append(int(fake.keep))
    assert seen[0] == 4 and 3 in seen and seen[-1] == 2 and seen == sorted(seen, reverse=True)
    assert model.dropout.p == pytest.approx(0.0)


def test_attention_distillation_runs(teacher_dir, task, tmp_path):
    recipe = recipe_with("int8", epochs=1, distill={"attention": 1.0, "hidden": 0.0, "labels": 0.0})
    result = compress_with_training(resolve_model(str(teacher_dir)), recipe, task, tmp_path / "a", limit=64)
    assert result.losses and all(not math.isnan(loss) for loss in result.losses)  # logged and not NaN


@pytest.mark.slow
def test_training_seed_decides_the_run(teacher_dir, task, tmp_path):
    """Same recipe seed: the same losses step for step; another seed: another data order and dropout."""

    def losses(seed: int, name: str) -> list[float]:
        recipe = recipe_with("int8", epochs=1, seed=seed, dropout={"start": 0.1, "end": 0.1})
        return compress_with_training(resolve_model(str(teacher_dir)), recipe, task, tmp_path / name, limit=64).losses

    first = losses(7, "a")
    assert first and losses(7, "b") == first
    assert losses(8, "c") != first
