"""The zoo CLI as a user meets it: help, success output, and bad input that fails with one
clear line, a non-zero exit and no partial output."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

from tests.conftest import DATA, leftovers


@pytest.fixture(scope="module")
def compressed(tiny_bert_dir, tmp_path_factory):
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    out = tmp_path_factory.mktemp("cli") / "tiny-4bit-2of4"
    write_compact(resolve_model(str(tiny_bert_dir)), load_recipe("4bit-2of4"), out)
    return out


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_teaches(run_cli):
    result = run_cli("--help")
    assert result.exit_code == 0
    for command in ("compress", "finetune", "eval", "pack", "unpack", "info", "recipes"):
        assert command in result.stdout
    compress_help = run_cli("compress", "--help").stdout
    assert "zoo compress minilm --recipe 4bit-2of4" in compress_help
    assert "--recipe" in compress_help and "--out" in compress_help


def _commands():
    import typer

    from zoo.cli import app

    group = typer.main.get_command(app)
    return sorted(group.commands.items())


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").replace("─", " ").split())


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_every_help_shows_every_parameters_help_and_default(name, monkeypatch):
    """Rich markup once ate every `[default: ...]` (and `zoo:NAME[@REV]`), left --learning-rate's help empty
    and gave flags a `<bool>` type: the rendered help must show each parameter's whole help and default."""
    from typer.testing import CliRunner

    from zoo.cli import app

    monkeypatch.setenv("TERMINAL_WIDTH", "400")  # one line per row: the help text stays contiguous
    command = dict(_commands())[name]
    shown = _flat(CliRunner().invoke(app, [name, "--help"]).stdout)
    assert "<bool>" not in shown
    for param in command.params:
        help_text = (param.help or "").replace("\\[", "[")
        if param.param_type_name == "option":
            assert help_text.strip(), f"zoo {name} {param.opts[0]} has no help"
        assert _flat(help_text) in shown, f"zoo {name} {param.name}: {help_text!r} not shown"
        if (
            param.param_type_name == "option"
            and not param.is_flag
            and param.default is not None
            and param.show_default is not False
        ):
            assert f"[default: {param.default}]" in shown, f"zoo {name} {param.opts[0]}: default not shown"
        assert "[default:" not in (param.help or "").replace("\\[default:", ""), "unescaped [default: is markup"


# Commands that need no model: each answers in a fraction of a second only if it imports neither torch nor
# transformers (seconds between them), which any module-level import on its path would pull in.
LIGHT_COMMANDS = {"--help": "compress", "recipes": "4bit-2of4", "list": "holds no models yet"}
STARTS_LIGHT = """
import sys
from zoo.console import main

sys.argv = ["zoo", sys.argv[1]]
try:
    main()
finally:
    print("heavy:", sorted(m for m in ("torch", "transformers") if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_commands_that_need_no_model_import_neither_torch_nor_transformers(command, tmp_path):
    """`zoo --help`, `zoo recipes` and `zoo list` (an empty registry) in a fresh process, as the console script
    runs them."""
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home")}
    env.pop("ZOO_REGISTRY", None)
    argv = [sys.executable, "-c", STARTS_LIGHT, command]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert LIGHT_COMMANDS[command] in result.stdout
    assert "heavy: []" in result.stderr.splitlines(), result.stderr


def test_version(run_cli):
    from zoo import __version__

    result = run_cli("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_recipes_lists_one_line_each(run_cli):
    from zoo.recipes import builtin_names

    result = run_cli("recipes")
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if line.split() and line.split()[0] in builtin_names()]
    assert [r.split()[0] for r in rows] == builtin_names()


@pytest.mark.parametrize("name", ["4bit-2of4", "xtc-binary", "kron-8x", "search"])
def test_recipes_prints_the_yaml_as_it_is_so_a_copy_loads(run_cli, tmp_path, name):
    """`zoo recipes NAME > my.yaml` is how README says to start a recipe: the copy must be the file, byte for
    byte (rich once ate `[linear]` as markup, leaving `kinds: ` and a recipe that did not load)."""
    from zoo.recipes import builtin_text, load_recipe

    result = run_cli("recipes", name)
    assert result.exit_code == 0 and result.stdout == builtin_text(name)
    copy = tmp_path / "mine.yaml"
    copy.write_text(result.stdout)
    assert load_recipe(str(copy)).rules == load_recipe(name).rules


def test_compress_prints_sizes_and_writes_a_checkpoint(run_cli, tiny_bert_dir, tmp_path):
    result = run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    assert "Compressed" in result.stdout and "encoder linear" in result.stdout
    assert (tmp_path / "o" / "model.safetensors").is_file()


def test_compress_default_output_name(run_cli, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("compress", tiny_bert_dir, "--recipe", "binary")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / f"{tiny_bert_dir.name}-binary" / "config.json").is_file()


def test_info_table_and_json(run_cli, compressed):
    table = run_cli("info", compressed)
    assert table.exit_code == 0
    assert "encoder.layer.0.attention.self.query" in table.stdout and "2:4 + int4 g128 sym" in table.stdout
    assert "evaluation      none recorded" in table.stdout
    as_json = run_cli("info", compressed, "--json")
    data = json.loads(as_json.stdout)
    config = json.loads((compressed / "config.json").read_text())["quantization_config"]
    assert data["manifest"] == {k: v for k, v in config.items() if k != "quant_method"}
    assert not data["results"]["measured"] and data["results"]["rows"][1]["value"] is None


def test_unpack_then_pack_round_trip(run_cli, compressed, tmp_path):
    assert run_cli("unpack", compressed, "--out", tmp_path / "dense").exit_code == 0
    result = run_cli("pack", tmp_path / "dense", "--recipe", "4bit-2of4", "--out", tmp_path / "packed")
    assert result.exit_code == 0, result.stderr
    assert "Packed" in result.stdout


# -- bad input ----------------------------------------------------------------------------------


def copy_of(compressed, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(compressed, target)
    return target


def test_truncated_safetensors(run_cli, compressed, tmp_path):
    bad = copy_of(compressed, tmp_path)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    assert_one_line_error(run_cli("info", bad), "not a valid safetensors file")
    assert_one_line_error(run_cli("unpack", bad, "--out", tmp_path / "u"), "not a valid safetensors file")
    assert not (tmp_path / "u").exists() and leftovers(tmp_path) == []


def test_flipped_header_byte(run_cli, compressed, tmp_path):
    bad = copy_of(compressed, tmp_path)
    f = bad / "model.safetensors"
    data = bytearray(f.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    assert_one_line_error(run_cli("info", bad))


def test_manifest_names_a_missing_tensor(run_cli, compressed, tmp_path):
    bad = copy_of(compressed, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    modules = config["quantization_config"]["modules"]
    modules["encoder.layer.7.ghost"] = modules["encoder.layer.0.output.dense"]
    (bad / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("info", bad), "encoder.layer.7.ghost", "missing")


def test_manifest_with_a_wrong_shape(run_cli, compressed, tmp_path):
    bad = copy_of(compressed, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["modules"]["encoder.layer.0.output.dense"]["shape"] = [64, 128]
    (bad / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("unpack", bad, "--out", tmp_path / "u"), "encoder.layer.0.output.dense", "needs")
    assert not (tmp_path / "u").exists()


def test_unknown_format_version(run_cli, compressed, tmp_path):
    bad = copy_of(compressed, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["format_version"] = 2
    (bad / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("info", bad), "unsupported zoo format_version 2", "hint: upgrade")


def test_unknown_codec(run_cli, compressed, tmp_path):
    bad = copy_of(compressed, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["modules"]["encoder.layer.0.output.dense"]["codec"]["codec"] = "vq"
    (bad / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("info", bad), "unknown codec 'vq'")


def test_pattern_that_is_not_nm(run_cli, tiny_bert_dir, tmp_path):
    recipe = tmp_path / "nm.yaml"
    recipe.write_text("name: nm\ndescription: 2:4 blocks\nrules: [{codec: {codec: nm, n: 2, m: 4}}]\n")
    result = run_cli("pack", tiny_bert_dir, "--recipe", recipe, "--out", tmp_path / "p")
    assert_one_line_error(result, "not 2:4 sparse")
    assert not (tmp_path / "p").exists() and leftovers(tmp_path) == []


def test_unknown_recipe_and_model(run_cli, tiny_bert_dir, tmp_path):
    assert_one_line_error(
        run_cli("compress", tiny_bert_dir, "--recipe", "4bits", "--out", tmp_path / "o"), "did you mean"
    )
    assert_one_line_error(run_cli("compress", "acme/no-such-model", "--recipe", "4bit"), "cannot find model")
    assert not (tmp_path / "o").exists()


def test_existing_output(run_cli, tiny_bert_dir, tmp_path):
    (tmp_path / "o").mkdir()
    assert_one_line_error(
        run_cli("compress", tiny_bert_dir, "--recipe", "4bit", "--out", tmp_path / "o"), "--overwrite"
    )
    result = run_cli("compress", tiny_bert_dir, "--recipe", "4bit", "--out", tmp_path / "o", "--overwrite")
    assert result.exit_code == 0


def test_bad_shard_size_is_a_usage_error(run_cli, tiny_bert_dir, tmp_path):
    result = run_cli("compress", tiny_bert_dir, "--recipe", "4bit", "--out", tmp_path / "o", "--max-shard-size", "lots")
    assert result.exit_code == 2 and "500MB" in result.stderr


# ---- fine-tuning commands: the machinery on a tiny BERT and a few real sentences ----
RT = str(DATA / "rotten_tomatoes")


@pytest.fixture(scope="module")
def tiny_teacher(tiny_bert_dir, tmp_path_factory):
    from typer.testing import CliRunner

    from zoo.cli import app

    out = tmp_path_factory.mktemp("cli-train") / "teacher"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tiny_bert_dir),
            "--task",
            "rotten_tomatoes",
            "--data",
            RT,
            "--out",
            str(out),
            "--limit",
            "96",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Fine-tuned" in result.stdout and "test       accuracy" in result.stdout
    mark = json.loads((out / ".zoo-output").read_text())  # a dense output: --overwrite may replace it later
    assert mark["written_by"] == "zoo finetune" and "model.safetensors" in mark["files"]
    return out


@pytest.mark.slow
def test_compress_with_task_reports_measured_accuracy_then_eval_agrees(run_cli, tiny_teacher, tmp_path):
    out = tmp_path / "student"
    result = run_cli(
        "compress",
        tiny_teacher,
        "--recipe",
        "int8",
        "--task",
        "rotten_tomatoes",
        "--data",
        RT,
        "--out",
        out,
        "--limit",
        "96",
        "--epochs",
        "1",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "test accuracy   teacher" in result.stdout and "retention" in result.stdout
    evaluated = run_cli("eval", out, "--task", "rotten_tomatoes", "--data", RT, "--limit", "96", "--json")
    measured = json.loads(evaluated.stdout)["metrics"]["accuracy"]
    manifest = json.loads((out / "config.json").read_text())["quantization_config"]
    recorded = [
        r["value"]
        for r in manifest["evaluation"]
        if r["role"] == "compressed" and r["split"] == "test" and r["metric"] == "accuracy"
    ]
    assert recorded == [pytest.approx(measured, abs=1e-6)]
    info = run_cli("info", out).stdout
    assert "trained         on rotten_tomatoes" in info and "teacher_agreement" in info
    from tests.cards.test_card import assert_card_matches_manifest

    assert_card_matches_manifest(out)  # the card compress wrote holds the measured numbers, and its plot
    fid = run_cli("eval", out, "--task", "fidelity", "--json")
    assert fid.exit_code == 0 and 0 < json.loads(fid.stdout)["metrics"]["agreement"] <= 1


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["compress", "{model}", "-r", "int8", "--data", RT], ["--data only applies with --task"]),
        (
            ["compress", "{model}", "-r", "int8", "--data", RT, "--limit", "4"],
            ["--data, --limit only apply with --task"],
        ),
        (["compress", "{model}", "-r", "int8", "--task", "sentiment"], ["unknown task 'sentiment'"]),
        (["compress", "{model}", "-r", "xtc-binary"], ["only distillation can recover", "--task"]),
        (
            ["compress", "{model}", "-r", "int8", "--task", "rotten_tomatoes", "--data", "/nonexistent"],
            ["data directory /nonexistent does not exist"],
        ),
        (
            ["finetune", "{model}", "--task", "rotten_tomatoes", "--data", RT, "--out", "{tmp}/t", "--device", "tpu"],
            ["unknown device 'tpu'"],
        ),
        (["eval", "{model}", "--task", "fidelity"], ["is not a zoo checkpoint", "--reference"]),
    ],
)
def test_training_commands_fail_cleanly(run_cli, tiny_bert_dir, tmp_path, args, fragments):
    result = run_cli(*[a.format(model=tiny_bert_dir, tmp=tmp_path) for a in args])
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []
