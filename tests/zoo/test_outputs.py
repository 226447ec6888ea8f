"""Nothing a user made is lost: --overwrite replaces only an empty directory or an earlier zoo output, and
an interrupted or terminated command leaves no half-written output behind and prints no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, leftovers
from tests.zoo.test_cli import assert_one_line_error


def test_overwrite_refuses_a_directory_holding_a_users_file(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "thesis.txt").write_text("three years of work")
    result = run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", out, "--overwrite")
    assert_one_line_error(result, "--overwrite refused", "zoo did not write", "thesis.txt")
    assert result.stderr.startswith("error: ")  # no blank line left by a progress bar that never drew
    assert (out / "thesis.txt").read_text() == "three years of work"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_an_earlier_output_but_not_a_users_file_put_inside_it(run_cli, tiny_bert_dir, tmp_path):
    out = tmp_path / "o"
    assert run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", out).exit_code == 0
    assert run_cli("compress", tiny_bert_dir, "--recipe", "4bit", "--out", out, "--overwrite").exit_code == 0
    (out / "notes.md").write_text("mine")
    result = run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", out, "--overwrite")
    assert_one_line_error(result, "holds files zoo did not write (notes.md)")
    assert (out / "notes.md").read_text() == "mine"


def test_overwrite_replaces_an_empty_directory_and_zoos_dense_outputs(run_cli, tiny_bert_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    assert (
        run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", tmp_path / "empty", "--overwrite").exit_code
        == 0
    )
    dense = tmp_path / "dense"
    assert run_cli("unpack", tmp_path / "empty", "--out", dense).exit_code == 0
    assert (dense / ".zoo-output").is_file()  # unpack's output is dense: no manifest, so zoo marks it
    assert run_cli("unpack", tmp_path / "empty", "--out", dense, "--overwrite").exit_code == 0
    # a user's dense model (no mark, no manifest) is never replaced
    assert_one_line_error(
        run_cli("unpack", tmp_path / "empty", "--out", tiny_bert_dir, "--overwrite"), "zoo did not write"
    )
    assert (tiny_bert_dir / "config.json").is_file()


def test_out_is_the_current_directory_or_a_file(run_cli, tiny_bert_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):
        assert_one_line_error(
            run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", out, "--overwrite"),
            "is the current directory or holds it",
        )
    (work / "f").write_text("x")
    assert_one_line_error(
        run_cli("compress", tiny_bert_dir, "--recipe", "int8", "--out", "f", "--overwrite"), "is not a directory"
    )
    assert sorted(p.name for p in work.iterdir()) == ["f"]


# a background shell starts its children with SIGINT ignored, and exec keeps that: restore it, then become zoo
_AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'zoo', *sys.argv[1:]])"
)


def _zoo(*args: str, cwd) -> subprocess.Popen:
    """The zoo command in a child process whose SIGINT is the default one, as a terminal's would be."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _AS_FROM_A_TERMINAL, *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigterm_while_writing_leaves_no_partial_output(minilm_dir, tmp_path):
    child = _zoo("compress", str(minilm_dir), "--recipe", "4bit-2of4", "--out", "m", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leftovers(tmp_path), "the output was never staged"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143, stderr
    assert "terminated; no output was written" in stderr and "Traceback" not in stderr
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("after_s", [0.1, 0.6])
def test_ctrl_c_while_importing_prints_one_line(tmp_path, after_s, tiny_bert_dir):
    child = _zoo("compress", str(tiny_bert_dir), "--recipe", "int8", "--out", "m", cwd=tmp_path)
    time.sleep(after_s)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().startswith("interrupted"), stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_an_error_an_extension_made_of_a_signal_still_ends_as_terminated(monkeypatch, capsys):
    """SIGTERM inside safetensors' get_tensor came back as "ValueError: could not determine the shape of
    object type" and a traceback: the remembered signal decides how the command ends."""
    import typer

    from zoo import cli, console

    @cli._fails_cleanly
    def reading():
        raise ValueError("could not determine the shape of object type")

    with pytest.raises(ValueError, match="shape of object"):  # no signal: a real error stays one
        reading()
    monkeypatch.setattr(console, "_received", [signal.SIGTERM])
    with pytest.raises(typer.Exit) as ended:
        reading()
    assert ended.value.exit_code == 143
    assert "terminated; no output was written" in capsys.readouterr().err
