"""Hostile and broken checkpoints: every entry point raises a typed error, never loads random layers, never
allocates past what the weights justify; the registry refuses odd names, hidden files and leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from zoo.formats import Checkpoint, FormatError, ManifestError

from tests.conftest import REPO, tiny_bert_config
from tests.zoo import fuzzing
from tests.zoo.test_cli import assert_one_line_error


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    fuzzing.make_checkpoints(root)
    return root


def _report(counts) -> str:
    return "; ".join(f"{kind} {what} {outcome}: {n}" for (kind, what, outcome), n in sorted(counts.items()))


@pytest.mark.slow
def test_fuzz_every_mutant_is_a_typed_error_or_an_unchanged_model(micro):
    counts, records = fuzzing.run(micro, seed=0, count=500)
    assert len(records) == 500
    assert fuzzing.failures(records) == [], _report(counts)
    outcomes = {outcome for (_, _, outcome) in counts}
    assert {"typed", "same"} <= outcomes  # the mutator both breaks files and leaves harmless edits


@pytest.mark.long
@pytest.mark.slow  # so that -m "not slow", which replaces the default -m "not long", leaves it out too
def test_fuzz_ten_thousand_mutants(micro):
    counts, records = fuzzing.run(micro, seed=1, count=10_000)
    assert fuzzing.failures(records) == [], _report(counts)


def _peak_rss_mb(code: str) -> tuple[float, str]:
    """Peak RSS of a fresh process running `code` (which prints its outcome), in MB."""
    probe = code + "\nimport resource; print('rss', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    rss = [line for line in done.stdout.splitlines() if line.startswith("rss ")]
    assert rss, done.stderr[-2000:]
    return int(rss[0].split()[1]) / 1024, done.stdout


LOAD = textwrap.dedent("""
    import zoo
    try:
        zoo.from_pretrained({path!r})
        print("loaded")
    except zoo.ZooError as exc:
        print("typed:", exc)
""")


def _edit_manifest(path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config["quantization_config"])
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_a_structure_bomb_is_refused_before_allocating(micro, tmp_path):
    normal, said = _peak_rss_mb(LOAD.format(path=str(micro / "single")))
    assert "loaded" in said
    bomb = shutil.copytree(micro / "single", tmp_path / "bomb")
    _edit_manifest(
        bomb,
        lambda q: q.update(
            structure={
                "attention_heads": [2],
                "intermediate_sizes": [400_000_000],
                "heads_before": 2,
                "intermediate_size_before": 400_000_000,
            }
        ),
    )
    peak, said = _peak_rss_mb(LOAD.format(path=str(bomb)))
    assert "typed: the manifest's pruned structure does not fit config.json: FFN width 400000000" in said
    assert peak < 1.5 * normal, (peak, normal)


@pytest.mark.slow
def test_a_module_shaped_unlike_its_layer_is_refused_before_decoding(micro, tmp_path):
    """A manifest and tensors that agree with each other (a wider FFN) but not with the model config.json
    describes: refused on the meta model, before a weight is decoded."""
    import torch
    from transformers import BertModel

    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    torch.manual_seed(0)
    wide = tmp_path / "wide-dense"
    BertModel(tiny_bert_config(intermediate_size=4096, max_position_embeddings=32)).save_pretrained(wide)
    recipe = load_recipe("int8")
    bomb = write_compact(resolve_model(str(wide)), recipe, tmp_path / "bomb").path
    small = json.loads((micro / "single" / "config.json").read_text())
    config = json.loads((bomb / "config.json").read_text())
    settings = {k: v for k, v in small.items() if k != "quantization_config"}
    from zoo.formats.manifest import config_digest

    config = {
        **settings,
        "quantization_config": {**config["quantization_config"], "config_sha256": config_digest(settings)},
    }
    (bomb / "config.json").write_text(json.dumps(config))
    assert Checkpoint.open(bomb).manifest.modules  # consistent in itself: only the model tells
    normal, _ = _peak_rss_mb(LOAD.format(path=str(micro / "single")))
    peak, said = _peak_rss_mb(LOAD.format(path=str(bomb)))
    assert "typed: module encoder.layer.0.intermediate.dense: the manifest records shape [4096, 32]" in said
    assert peak < 1.5 * normal, (peak, normal)


def test_a_config_that_sizes_the_model_past_its_weights_is_refused(micro, tmp_path):
    """num_hidden_layers: 1e12 made transformers allocate until the machine ran out (24 GB in a minute). The
    edit is caught by the manifest's config hash; with the hash recomputed too (or a plain dense model), by the
    bound on sizes."""
    from zoo.formats.manifest import config_digest

    import zoo

    for key, value in (("num_hidden_layers", 10**12), ("intermediate_size", 10**9), ("vocab_size", -1)):
        bomb = shutil.copytree(micro / "single", tmp_path / key)
        config = json.loads((bomb / "config.json").read_text())
        config[key] = value
        (bomb / "config.json").write_text(json.dumps(config))
        with pytest.raises(zoo.ZooError, match="config.json's settings changed"):
            zoo.from_pretrained(bomb)
        config["quantization_config"]["config_sha256"] = config_digest(config)
        (bomb / "config.json").write_text(json.dumps(config))
        with pytest.raises(zoo.ZooError, match=f"{key} = .* exceeds"):
            zoo.from_pretrained(bomb)
    dense = shutil.copytree(micro / "dense", tmp_path / "dense")
    config = json.loads((dense / "config.json").read_text())
    (dense / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**12}))
    with pytest.raises(
        zoo.ZooError, match="num_hidden_layers = 1,000,000,000,000 exceeds the 1 layer its weights hold"
    ):
        zoo.from_pretrained(dense)


def test_zoo_shards_without_a_zoo_config_never_load_random_layers(micro, tmp_path):
    import zoo

    for q in (None, {"quant_method": "bitsandbytes"}):
        broken = shutil.copytree(micro / "single", tmp_path / f"q-{bool(q)}")
        config = json.loads((broken / "config.json").read_text())
        config.pop("quantization_config")
        if q:
            config["quantization_config"] = q
        (broken / "config.json").write_text(json.dumps(config))
        with pytest.raises(FormatError, match="written by zoo .* randomly initialised"):
            zoo.from_pretrained(broken)


def test_a_shard_index_may_only_name_files_inside(micro, tmp_path):
    import zoo

    for target in ("../../outside.safetensors", "/etc/passwd"):
        broken = shutil.copytree(micro / "sharded", tmp_path / target.replace("/", "_"))
        index = json.loads((broken / "model.safetensors.index.json").read_text())
        first = next(iter(index["weight_map"]))
        index["weight_map"][first] = target
        (broken / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(FormatError, match="outside the checkpoint"):
            zoo.from_pretrained(broken)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format_version", True),
        ("sizes.checkpoint_nbytes", -1),
        ("modules.*.shape", ["384", 32]),
        ("modules.*.shape", [384, 0]),
    ],
)
def test_the_manifest_is_strict(micro, tmp_path, field, value):
    broken = shutil.copytree(micro / "single", tmp_path / "m")

    def edit(q):
        parts, target = field.split("."), q
        for part in parts[:-1]:
            target = next(iter(target.values())) if part == "*" else target[part]
        target[parts[-1]] = value

    _edit_manifest(broken, edit)
    with pytest.raises(ManifestError):
        Checkpoint.open(broken, verify=False)


def test_body_corruption_is_caught_by_verify_and_zoo_verify(micro, tmp_path, run_cli):
    import zoo

    broken = shutil.copytree(micro / "single", tmp_path / "m")
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-64] ^= 0x10
    (broken / "model.safetensors").write_bytes(bytes(data))
    zoo.from_pretrained(broken)  # a plain load hashes nothing (fast); README says so
    with pytest.raises(zoo.ZooError, match="does not match its recorded sha256"):
        zoo.from_pretrained(broken, verify=True)
    assert_one_line_error(run_cli("verify", broken), "model.safetensors does not match its recorded sha256")
    ok = run_cli("verify", micro / "single")
    assert ok.exit_code == 0 and "files" in ok.stdout and "match their sha256" in ok.stdout


def test_zoo_info_prints_no_escape_sequences_or_markup_from_a_manifest(micro, tmp_path, run_cli):
    shown = shutil.copytree(micro / "single", tmp_path / "m")
    _edit_manifest(shown, lambda q: q["recipe"]["spec"].update(description="\x1b[2J\x1b[31mred [bold]loud[/bold]"))
    result = run_cli("info", shown)
    assert result.exit_code == 0, result.stderr
    assert "\x1b" not in result.stdout and "?[31mred [bold]loud[/bold]" in result.stdout


# -- the registry ---------------------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_REGISTRY", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize("name", ["zoo:a/b\n", "zoo:a/b\nc", "zoo:" + "x" * 250, "zoo:" + "a/" * 12 + "b"])
def test_odd_model_names_are_typed_errors(run_cli, home, micro, name):
    result = run_cli("upload", micro / "single", name)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_hidden_files_are_not_uploaded_unless_asked(run_cli, home, micro, tmp_path):
    src = shutil.copytree(micro / "single", tmp_path / "with-secrets")
    (src / ".env").write_text("HF_TOKEN=hf_secret")
    (src / ".DS_Store").write_bytes(b"\0")
    result = run_cli("upload", src, "zoo:t/hidden")
    assert result.exit_code == 0, result.stderr
    assert "hidden files not uploaded: .DS_Store, .env" in " ".join(result.stderr.split())
    pulled = run_cli("pull", "zoo:t/hidden").stdout.strip()
    assert not (tmp_path / pulled / ".env").exists() and not list(home.rglob(".env"))
    assert run_cli("upload", src, "zoo:t/all", "--include-hidden").exit_code == 0
    assert list(home.rglob(".env"))


def test_a_pull_killed_midway_leaves_nothing_once_pulled_again(run_cli, home, micro):
    from zoo import registry

    registry.upload(micro / "single", "zoo:t/killed")
    slow_pull = textwrap.dedent("""
        import shutil, time
        import zoo.registry.files as files
        real = files.copy_files
        def slowly(*args, **kwargs):
            real(*args, **kwargs)
            print("copied", flush=True)
            time.sleep(60)  # killed here, its partial copy complete but not yet verified
        files.copy_files = slowly
        import zoo.registry.local as local
        local.copy_files = slowly
        from zoo import registry
        registry.pull("zoo:t/killed")
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", slow_pull],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout.readline().strip() == "copied"
    cache = home / "cache"
    assert [p.name for p in cache.rglob(".*.partial-*")], "the killed pull left its partial copy"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    path = registry.pull("zoo:t/killed")
    assert Checkpoint.open(path).manifest.modules
    assert [p.name for p in cache.rglob("*partial*")] == []  # the dead process's copy is gone


def test_stale_partials_of_live_processes_stay(tmp_path):
    from zoo.registry.files import partial_dir, remove_stale_partials

    mine = partial_dir(tmp_path, "model")
    mine.mkdir()
    dead = tmp_path / ".model.partial-999999-0123abcd"
    dead.mkdir()
    assert remove_stale_partials(tmp_path) == [dead.name] and mine.is_dir()  # this process is alive
