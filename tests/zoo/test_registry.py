"""The registry: `zoo upload`, `zoo pull`/`download`, `zoo list`, `zoo.from_pretrained("zoo:...")`.

Two kinds of registry, both for real: the local one (a folder), and a Hub-compatible server made of
olah (a real, self-hosted Hugging Face mirror that serves local git repositories; every download here
comes from it) behind a test-only stand-in for the Hub's write API (see hub_standin.py). Servers bind
127.0.0.1 only and are started and stopped by the fixtures."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.zoo.hub_standin import Olah, WriteStandIn

STUB = "zoo:tiny/rotten-tomatoes/4bit-2of4"
TOKEN = "hf_zooTestTokenDoNotPrint1234567890"
IDS = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102]])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()] if root.exists() else []


def same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    other = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return names == other and match == names and not mismatch and not errors


def outputs(path) -> torch.Tensor:
    import zoo

    with torch.no_grad():
        return zoo.from_pretrained(path)(input_ids=IDS).last_hidden_state


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty ZOO_HOME; no registry or token from the environment."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_REGISTRY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "home"


@pytest.fixture(scope="module")
def ckpt(tiny_bert_dir, compressed_models) -> Path:
    return compressed_models.path(tiny_bert_dir, "4bit-2of4")


@pytest.fixture(scope="module")
def other_ckpt(tiny_bert_dir, compressed_models) -> Path:
    return compressed_models.path(tiny_bert_dir, "int8")


# -- names --------------------------------------------------------------------------------------


def test_names_stubs_revisions_and_unsafe_file_names():
    from zoo.errors import RegistryError
    from zoo.registry.names import check_file_name, hub_repo_for, parse_name

    ref = parse_name("zoo:minilm-l6/rotten-tomatoes/4bit-2of4@3f9c2a1b7d0e")
    assert (ref.name, ref.revision, ref.stub) == ("minilm-l6/rotten-tomatoes/4bit-2of4", "3f9c2a1b7d0e", True)
    assert parse_name("org/model", revision="main").revision == "main"
    assert hub_repo_for(ref.name, "ns", stub=True) == "ns/minilm-l6.rotten-tomatoes.4bit-2of4"
    assert hub_repo_for("org/model", "ns", stub=False) == "org/model"
    for bad in ("zoo:", "a//b", "../a", "a/../b", "/abs", "a b", "zoo:a@", "a@..", "a@-x"):
        with pytest.raises(RegistryError):
            parse_name(bad)
    with pytest.raises(RegistryError, match="contradict|--revision"):
        parse_name("a@r1", revision="r2")
    for good in ("config.json", "card/accuracy_vs_size.png", ".eval_results/rotten_tomatoes.yaml"):
        assert check_file_name(good, "test") == good
    for bad in (
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a\\b",
        ".git/config",
        ".cache/x",
        "*",
        "",
        "a/",
    ):
        with pytest.raises(RegistryError, match="not a plain relative path"):
            check_file_name(bad, "test")


# -- the local registry ---------------------------------------------------------------------------


def test_local_round_trip_list_and_from_pretrained(run_cli, home, ckpt):
    from zoo.formats import Checkpoint

    up = run_cli("upload", ckpt, STUB)
    assert up.exit_code == 0, up.stderr
    assert f"Uploaded {ckpt} as {STUB}@" in up.stdout
    assert not (home / "cache").exists()  # the cache is empty before the pull

    pulled = run_cli("pull", STUB)
    assert pulled.exit_code == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.is_relative_to(home / "cache") and same_tree(ckpt, path)
    assert run_cli("download", STUB).stdout == pulled.stdout  # the same command under its other name
    assert torch.equal(outputs(path), outputs(ckpt))
    assert torch.equal(outputs(STUB), outputs(ckpt))  # zoo.from_pretrained pulls a stub, then loads it

    listed = json.loads(run_cli("list", "--json").stdout)
    (row,) = listed["models"]
    m = Checkpoint.open(ckpt).manifest
    assert row["name"] == STUB and row["recipe"] == m.recipe.name == "4bit-2of4"
    assert row["checkpoint_ratio"] == m.sizes.checkpoint_ratio
    assert row["encoder_linear_ratio"] == m.sizes.encoder_linear_ratio
    assert row["size_nbytes"] == sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
    assert row["result"] is None and not m.evaluation  # post-training: nothing measured, nothing invented
    table = run_cli("list").stdout
    assert (
        STUB in table
        and row["revision"] in table
        and "4bit-2of4" in table
        and f"{m.sizes.encoder_linear_ratio:.2f}x" in table
    )


def test_list_shows_the_measured_result_from_the_manifest(run_cli, home, ckpt, tmp_path, monkeypatch):
    from zoo.formats.manifest import EvalResult, Manifest

    from zoo import cli

    monkeypatch.setattr(cli.out, "width", 160)  # a wide terminal: no folded cells

    measured = tmp_path / "measured"
    shutil.copytree(ckpt, measured)
    config = json.loads((measured / "config.json").read_text())
    manifest = Manifest.from_quantization_config(config["quantization_config"])
    manifest.evaluation = [
        EvalResult(
            role="teacher",
            task="rotten_tomatoes",
            dataset="rotten_tomatoes",
            split="test",
            metric="accuracy",
            value=0.8333,
            n_examples=1200,
        ),
        EvalResult(
            role="compressed",
            task="rotten_tomatoes",
            dataset="rotten_tomatoes",
            split="validation",
            metric="accuracy",
            value=0.81,
            n_examples=1066,
        ),
        EvalResult(
            role="compressed",
            task="rotten_tomatoes",
            dataset="rotten_tomatoes",
            split="test",
            metric="accuracy",
            value=0.8217,
            n_examples=1200,
        ),
    ]
    config["quantization_config"] = manifest.to_quantization_config()
    (measured / "config.json").write_text(json.dumps(config))  # config.json is not hashed by the manifest
    assert run_cli("upload", measured, STUB).exit_code == 0
    (row,) = json.loads(run_cli("list", "--json").stdout)["models"]
    assert (row["result"]["split"], row["result"]["value"], row["result"]["role"]) == ("test", 0.8217, "compressed")
    table = run_cli("list").stdout
    assert "82.17%" in table and "rotten_tomatoes" in table and "81.00%" not in table


def test_revisions_are_pinned_and_main_moves(run_cli, home, ckpt, other_ckpt):
    from zoo import registry

    first = registry.upload(ckpt, STUB)
    again = registry.upload(ckpt, STUB)  # same content, same revision: nothing new
    second = registry.upload(other_ckpt, STUB)
    assert first.revision == again.revision != second.revision
    assert same_tree(other_ckpt, registry.pull(STUB))
    assert same_tree(ckpt, registry.pull(f"{STUB}@{first.revision}"))
    assert same_tree(ckpt, registry.pull(STUB, revision=first.revision[:6]))  # a unique prefix will do
    (row,) = registry.list_models().models
    assert (row.revision, row.revisions, row.recipe) == (second.revision, 2, "int8")
    assert_one_line_error(run_cli("pull", f"{STUB}@ffffffffffff"), "has no revision 'ffffffffffff'", first.revision)


def test_unknown_name_lists_close_matches_in_one_line(run_cli, home, ckpt):
    from zoo import registry

    registry.upload(ckpt, STUB)
    registry.upload(ckpt, "zoo:tiny/sst2/4bit-2of4")
    result = run_cli("pull", "zoo:tiny/rotten-tomatoes/4bit-2of8")
    assert_one_line_error(
        result, "no model 'tiny/rotten-tomatoes/4bit-2of8'", "close matches: zoo:tiny/rotten-tomatoes/4bit-2of4"
    )
    assert_one_line_error(run_cli("pull", "zoo:nothing/like/it"), "no model", "(2 models)")
    assert_one_line_error(run_cli("list", "--registry", "nonsense"), "unknown registry 'nonsense'")
    assert not (home / "cache").exists() or files_under(home / "cache") == []


def test_tampered_registry_file_is_refused_and_nothing_is_left(run_cli, home, ckpt):
    from zoo import registry

    published = registry.upload(ckpt, STUB)
    stored = Path(published.location)
    for name in ("model.safetensors", "README.md"):  # one the manifest lists, one only the index does
        original = (stored / name).read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 0x01
        (stored / name).chmod(0o644)  # stored read-only (pulls hard-link it): a tamperer changes that first
        (stored / name).write_bytes(bytes(data))
        result = run_cli("pull", STUB)
        assert_one_line_error(result, name, "does not match the sha256 the registry recorded")
        assert files_under(home / "cache") == []  # no partial copy, nothing half-verified
        (stored / name).write_bytes(original)
    assert same_tree(ckpt, Path(run_cli("pull", STUB).stdout.strip()))


def test_a_damaged_cached_copy_is_fetched_again(home, ckpt):
    from zoo import registry

    registry.upload(ckpt, STUB)
    path = registry.pull(STUB)
    (path / "vocab.txt").unlink()  # replaced, as an editor saves a file: the registry's copy is untouched
    (path / "vocab.txt").write_text("changed after the pull")
    (path / "stray.txt").write_text("not from the registry")
    assert registry.pull(STUB) == path and same_tree(ckpt, path)


def test_a_local_pull_hard_links_the_registrys_read_only_files(home, ckpt):
    """Pulls from a local registry once copied every file (models/ and cache/ were each 108 MB)."""
    import stat

    from zoo import registry

    stored = Path(registry.upload(ckpt, STUB).location)
    path = registry.pull(STUB)
    for name in ("model.safetensors", "vocab.txt"):
        assert (path / name).stat().st_ino == (stored / name).stat().st_ino  # one copy of the bytes on disk
        assert stat.S_IMODE((stored / name).stat().st_mode) == 0o444  # never edited in place
    assert same_tree(ckpt, path)


def test_a_pull_across_file_systems_copies(home, ckpt, monkeypatch):
    import errno

    from zoo import registry

    stored = Path(registry.upload(ckpt, STUB).location)

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("os.link", no_link)
    path = registry.pull(STUB)
    assert (path / "model.safetensors").stat().st_ino != (stored / "model.safetensors").stat().st_ino
    assert same_tree(ckpt, path)


def test_unsafe_names_and_links_from_a_registry_are_refused(run_cli, home, ckpt, tmp_path):
    from zoo import registry

    published = registry.upload(ckpt, STUB)
    index_path = home / "index.json"
    original = index_path.read_text()
    index = json.loads(original)
    files = index["models"]["tiny/rotten-tomatoes/4bit-2of4"]["revisions"][published.revision]["files"]
    files["../../escaped.txt"] = files["vocab.txt"]
    index_path.write_text(json.dumps(index))
    assert_one_line_error(run_cli("pull", STUB), "'../../escaped.txt'", "not a plain relative path")
    assert not list(tmp_path.rglob("escaped.txt")) and files_under(home / "cache") == []

    index_path.write_text(original)
    stored = Path(published.location)
    (stored / "vocab.txt").unlink()
    (stored / "vocab.txt").symlink_to(ckpt / "vocab.txt")  # same bytes, but a link
    assert_one_line_error(run_cli("pull", STUB), "vocab.txt", "symbolic link")
    assert files_under(home / "cache") == []

    linked = tmp_path / "linked"
    shutil.copytree(ckpt, linked)
    (linked / "extra.json").symlink_to(linked / "config.json")
    assert_one_line_error(run_cli("upload", linked, "zoo:tiny/linked"), "extra.json is a symbolic link")


def test_upload_refuses_what_is_not_a_verified_checkpoint(run_cli, home, ckpt, tiny_bert_dir, tmp_path):
    assert_one_line_error(run_cli("upload", tiny_bert_dir, "zoo:tiny/dense"), "no zoo quantization_config")
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    data = bytearray((broken / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "model.safetensors").write_bytes(bytes(data))
    assert_one_line_error(run_cli("upload", broken, STUB), "model.safetensors", "sha256")
    assert_one_line_error(run_cli("upload", tmp_path / "nope", STUB), "is not a directory")
    assert_one_line_error(run_cli("upload", ckpt, "zoo:a/../b"), "is not a model name")
    assert not (home / "index.json").exists() and files_under(home / "models") == []
    assert not (home / "models").exists() or list((home / "models").iterdir()) == []  # no staging folder left


CONCURRENT = """
import json, sys, time
from pathlib import Path
from zoo.cli import app            # every import done before the start signal
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.002)
for args in json.loads(sys.argv[2]):
    code = app(args, prog_name="zoo", standalone_mode=False)
    if code:
        sys.exit(code)
"""


def test_concurrent_pulls_and_uploads_in_parallel_processes(home, ckpt, other_ckpt, tmp_path):
    """Two processes started at once against one local registry and one cache: both pull the same four
    models in the same order, then each uploads ten models of its own, so that their copies and index
    updates overlap. A race cannot be forced, but it is caught often: without the index lock 2 of 4 runs
    lost index entries; without the pull lock 2 of 3 runs failed (a pull renaming its copy onto the other's)."""
    from zoo import registry
    from zoo.registry.files import verify_files
    from zoo.registry.index import Index

    pulled = [STUB, *(f"zoo:tiny/pulled-{i}" for i in range(3))]
    for name in pulled:
        registry.upload(ckpt, name)
    go = tmp_path / "go"
    n_uploads = 10
    uploads = {
        src: [["upload", str(src), f"zoo:tiny/{tag}-{i}"] for i in range(n_uploads)]
        for src, tag in ((ckpt, "a"), (other_ckpt, "b"))
    }
    pulls = [["pull", name] for name in pulled]
    jobs = [pulls + uploads[ckpt], pulls + uploads[other_ckpt]]
    env = {**os.environ, "ZOO_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(go), json.dumps(job)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    time.sleep(0.5)
    go.touch()
    results = [(p.wait(180), *p.communicate()) for p in procs]
    for code, stdout, stderr in results:
        assert code == 0, stderr
    paths = [line for line in results[0][1].splitlines() if not line.startswith("Uploaded")]
    assert paths == [line for line in results[1][1].splitlines() if not line.startswith("Uploaded")]
    assert len(paths) == 4 and all(same_tree(ckpt, Path(p)) for p in paths)

    index = Index.parse((home / "index.json").read_bytes(), "test")
    expected = {n.removeprefix("zoo:") for n in pulled} | {f"tiny/{t}-{i}" for t in "ab" for i in range(n_uploads)}
    assert set(index.models) == expected  # no update lost
    for name, entry in index.models.items():
        verify_files(home.joinpath("models", *name.split("/"), entry.main), entry.revisions[entry.main].files, name)
    assert [*home.rglob(".*partial-*"), *home.rglob(".*tmp-*"), *home.rglob(".*old-*")] == []  # nothing half-done


# -- a Hub-compatible server: olah for reads, the write stand-in in front of it ----------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.fail("git is required by olah (the Hub mirror these tests use)")
    try:
        import olah  # noqa: F401
    except ImportError:
        pytest.fail("olah is not installed; install the test extra: pip install -e '.[test]'")
    olah_server = Olah(tmp_path_factory.mktemp("olah")).start()
    standin = WriteStandIn(olah_server, token=TOKEN).start()
    yield standin
    standin.stop()
    olah_server.stop()


@pytest.fixture
def online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1 (conftest); these tests talk to 127.0.0.1 only."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, text=True).stdout.strip()


def test_hub_round_trip_through_olah(run_cli, home, hub, online, ckpt, monkeypatch):
    name = "zoo:tiny/olah/4bit-2of4"
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the token comes from the environment, as users set it
    up = run_cli("upload", ckpt, name, "--registry", hub.url, "--private")
    assert up.exit_code == 0, up.stderr
    repo = hub.repos.path("zoo-registry", "tiny.olah.4bit-2of4")
    revision = git(repo, "rev-parse", "main")
    assert f"{name}@{revision}" in up.stdout and hub.repos.private["zoo-registry/tiny.olah.4bit-2of4"]
    committed = set(git(repo, "ls-tree", "-r", "--name-only", revision).splitlines())
    assert committed == {".gitattributes", *all_files(ckpt)} and "README.md" in committed  # the card goes too

    hub.requests.clear()
    pulled = run_cli("pull", name, "--registry", hub.url)
    assert pulled.exit_code == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.is_relative_to(home / "cache") and path.name == revision
    assert same_tree(ckpt, path)
    assert ("GET", f"/zoo-registry/tiny.olah.4bit-2of4/resolve/{revision}/model.safetensors") in hub.requests
    assert torch.equal(outputs(path), outputs(ckpt))

    (row,) = json.loads(run_cli("list", "--registry", hub.url, "--json").stdout)["models"][-1:]
    assert row["name"] == name and row["repo"] == "zoo-registry/tiny.olah.4bit-2of4" and row["revision"] == revision

    # a plain repo id works too (verified against the manifest)
    plain = run_cli("pull", "zoo-registry/tiny.olah.4bit-2of4", "--registry", hub.url, "--revision", revision)
    assert plain.exit_code == 0, plain.stderr and same_tree(ckpt, Path(plain.stdout.strip()))

    outputs_text = up.stdout + up.stderr + pulled.stdout + pulled.stderr + plain.stdout + plain.stderr
    assert TOKEN not in outputs_text
    assert not [p for p in files_under(home) if TOKEN.encode() in p.read_bytes()]


def test_hub_revision_pinning(home, hub, online, ckpt, other_ckpt):
    from zoo import registry

    first = registry.upload(ckpt, "zoo:tiny/olah/pinned", registry=hub.url, token=TOKEN)
    second = registry.upload(other_ckpt, "zoo:tiny/olah/pinned", registry=hub.url, token=TOKEN)
    assert first.revision != second.revision and len(first.revision) == 40
    assert same_tree(other_ckpt, registry.pull("zoo:tiny/olah/pinned", registry=hub.url))
    assert same_tree(ckpt, registry.pull(f"zoo:tiny/olah/pinned@{first.revision[:8]}", registry=hub.url))


def tamper_blob(repo: Path, revision: str, path: str) -> None:
    """Change a file's bytes in git's object store without changing its id: storage tampered behind git's back."""
    blob = git(repo, "rev-parse", f"{revision}:{path}")
    data = bytearray(
        subprocess.run(["git", "-C", str(repo), "cat-file", "blob", blob], capture_output=True, check=True).stdout
    )
    data[len(data) // 2] ^= 0x01
    obj = repo / "objects" / blob[:2] / blob[2:]
    obj.chmod(0o644)
    obj.write_bytes(zlib.compress(b"blob %d\0" % len(data) + bytes(data)))


def test_hub_tampered_file_is_refused_and_nothing_is_left(run_cli, home, hub, online, ckpt):
    from zoo import registry

    name = "zoo:tiny/olah/tampered"
    published = registry.upload(ckpt, name, registry=hub.url, token=TOKEN)
    tamper_blob(hub.repos.path("zoo-registry", "tiny.olah.tampered"), published.revision, "model.safetensors")
    result = run_cli("pull", name, "--registry", hub.url)
    assert_one_line_error(result, "model.safetensors", "does not match the sha256 the registry recorded")
    assert files_under(home / "cache") == []

    # a plain repo id has no index entry: its manifest's sha256 catches the same thing
    plain = run_cli("pull", "zoo-registry/tiny.olah.tampered", "--registry", hub.url)
    assert_one_line_error(plain, "model.safetensors", "sha256")
    assert files_under(home / "cache") == []


def test_hub_credentials_and_offline_mode(run_cli, home, hub, online, ckpt, monkeypatch):
    wrong = "hf_wrongTokenAlsoNeverPrinted000"
    result = run_cli("upload", ckpt, "zoo:tiny/olah/denied", "--registry", hub.url, "--token", wrong)
    assert_one_line_error(result, "refused the credentials (HTTP 401)")
    assert wrong not in result.stdout + result.stderr
    assert_one_line_error(run_cli("upload", ckpt, "zoo:tiny/olah/denied", "--registry", hub.url), "HTTP 401")

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert_one_line_error(run_cli("list", "--registry", hub.url), "HF_HUB_OFFLINE is set")


def test_hub_unknown_name(run_cli, home, hub, online, ckpt):
    from zoo import registry

    registry.upload(ckpt, "zoo:tiny/olah/known", registry=hub.url, token=TOKEN)
    result = run_cli("pull", "zoo:tiny/olah/knwn", "--registry", hub.url)
    assert_one_line_error(result, "no model 'tiny/olah/knwn'", "zoo:tiny/olah/known")
    result = run_cli("pull", "someone/nothing", "--registry", hub.url)
    assert_one_line_error(result, "no hub repo someone/nothing")


def test_hub_index_update_retries_when_another_upload_got_there_first(home, hub, online, ckpt, other_ckpt):
    """The index is updated by a commit whose parent is the index that was read; a concurrent update
    makes the Hub refuse it (412), and the update is redone on the new index."""
    from zoo import registry
    from zoo.registry import HubRegistry

    reg = registry.open_registry(hub.url, token=TOKEN)
    assert isinstance(reg, HubRegistry)
    read = reg._read_index
    calls = []

    def read_then_race():  # the 1st read picks the repo, the 2nd is the one the index update builds on
        result = read()
        calls.append(result[1])
        if len(calls) == 2:
            registry.upload(other_ckpt, "zoo:tiny/olah/racer", registry=hub.url, token=TOKEN)
        return result

    reg._read_index = read_then_race
    hub.requests.clear()
    reg.upload(ckpt, "zoo:tiny/olah/slow")
    commits = [p for m, p in hub.requests if m == "POST" and p.endswith("zoo-index/commit/main")]
    assert len(commits) == 3 and len(calls) == 3  # the racer's; ours, refused; ours again on the new index
    names = {r.name for r in registry.list_models(registry=hub.url).models}
    assert {"zoo:tiny/olah/racer", "zoo:tiny/olah/slow"} <= names


@pytest.mark.slow
def test_server_down_fails_fast_with_bounded_retries(run_cli, home, online, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    start = time.monotonic()
    result = run_cli("pull", STUB, "--registry", f"http://127.0.0.1:{closed}")
    assert_one_line_error(result, "no answer from", "after 3 attempts", "Connection refused")
    assert time.monotonic() - start < 10

    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "0.25")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        result = run_cli("list", "--registry", f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert_one_line_error(result, "no answer from", "after 3 attempts")
        assert time.monotonic() - start < 10


def test_help_and_token_never_shown(run_cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = run_cli("--help")
    for command in ("upload", "pull", "download", "list"):
        assert command in result.stdout
    for command in ("upload", "pull", "download", "list"):
        text = run_cli(command, "--help").stdout
        assert "--registry" in text and TOKEN not in text
    assert "zoo upload minilm-4bit-2of4 zoo:minilm-l6/rotten-tomatoes/4bit-2of4" in run_cli("upload", "--help").stdout
