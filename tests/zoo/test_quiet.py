"""transformers' "Loading weights" bars are hidden inside zoo commands and zoo's own loads; a real problem (a head
the weights lack) is still said, in one line, by zoo.from_pretrained; `zoo --verbose` shows everything."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def int8_dir(tiny_bert_dir, tmp_path_factory):
    from zoo.compress import write_compact
    from zoo.recipes import load_recipe
    from zoo.resolve import resolve_model

    return write_compact(
        resolve_model(str(tiny_bert_dir)), load_recipe("int8"), tmp_path_factory.mktemp("q") / "m"
    ).path


def test_from_pretrained_shows_no_loading_bar(int8_dir, capfd):
    import zoo

    capfd.readouterr()
    zoo.from_pretrained(int8_dir)
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out


def test_from_pretrained_still_reports_a_head_that_is_not_in_the_weights(int8_dir, capfd, caplog):
    import zoo

    capfd.readouterr()
    zoo.from_pretrained(int8_dir, task="text-classification")
    assert "2 parameters of BertForSequenceClassification are not in" in caplog.text  # zoo's line, in place of
    assert "(classifier.bias, classifier.weight)" in caplog.text  # transformers' LOAD REPORT table
    assert "LOAD REPORT" not in caplog.text and "Loading weights" not in capfd.readouterr().err


def test_verbose_shows_transformers_bars(int8_dir, run_cli, monkeypatch):
    from zoo.loaders.auto import VERBOSE_ENV

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    quiet = run_cli("eval", int8_dir, "--task", "fidelity")
    assert quiet.exit_code == 0 and "Loading weights" not in quiet.stderr
    monkeypatch.setenv(VERBOSE_ENV, "")  # monkeypatch restores it after the test; --verbose sets it
    loud = run_cli("--verbose", "eval", int8_dir, "--task", "fidelity")
    assert loud.exit_code == 0, loud.stderr
    assert "Loading weights" in loud.stderr
