"""A Hub-compatible endpoint for tests: a real olah mirror for reads, and a test-only stand-in for the
Hub's write API in front of it.

olah (PyPI `olah`, a self-hosted Hugging Face mirror) serves local git repositories through the Hub's
read API when its TOML says `[accessibility] offline = true` and names a `mirrors-path`
(`MIRRORS/models/OWNER/NAME` is a git repository). `snapshot_download`, `hf_hub_download` and
`model_info`, with `revision=`, work against it unchanged. It has no write API, and no Hub-compatible
server that accepts uploads can be installed here, so `WriteStandIn` STANDS IN FOR THE HUB'S WRITE API:
it answers the calls huggingface_hub makes for a regular (non-LFS) upload and forwards everything else,
unchanged, to olah:

    POST /api/repos/create                   git init + an initial commit holding .gitattributes, as the Hub does
    POST /api/validate-yaml                  accepts any model-card metadata
    POST /api/models/OWNER/NAME/preupload/REV   answers "regular" for every file (no LFS or Xet storage here)
    POST /api/models/OWNER/NAME/commit/REV      the NDJSON commit (base64 file contents, deletions) written
                                                as a git commit into the repository olah serves; a
                                                parentCommit that is not the branch head gets HTTP 412

Writes need `Authorization: Bearer TOKEN` when a token is set (else 401, as the Hub answers). `private`
is recorded but not enforced: olah serves every repository. So every download in these tests really
comes from olah, reading the git objects written here. Both servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "hub stand-in",
    "GIT_AUTHOR_EMAIL": "standin@127.0.0.1",
    "GIT_COMMITTER_NAME": "hub stand-in",
    "GIT_COMMITTER_EMAIL": "standin@127.0.0.1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Olah:
    """olah in a subprocess, offline, serving MIRRORS/models/OWNER/NAME git repositories."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.mirrors = workdir / "mirrors"
        (self.mirrors / "models").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Olah:
        config = self.workdir / "olah.toml"
        # metadata-cache-ttl 0: branch -> commit is resolved afresh on every request (uploads move `main`)
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n"
        )
        with open(self.workdir / "olah.out", "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "olah.server", "-c", str(config)],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, 60, self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"olah did not start: {(self.workdir / 'olah.out').read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class GitRepos:
    """The write side: repositories and commits, with git's own plumbing commands."""

    def __init__(self, mirrors: Path):
        self.root = mirrors / "models"
        self.lock = threading.Lock()
        self.private: dict[str, bool] = {}

    def path(self, owner: str, name: str) -> Path:
        if not (_NAME.match(owner) and _NAME.match(name)) or ".." in owner + name:
            raise ValueError(f"bad repo id {owner}/{name}")
        return self.root / owner / name

    def git(self, repo: Path, *args: str, stdin: bytes | None = None, env: dict | None = None) -> str:
        result = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=stdin,
            capture_output=True,
            check=True,
            env={**os.environ, **_GIT_ENV, **(env or {})},
        )
        return result.stdout.decode().strip()

    def head(self, repo: Path, branch: str) -> str | None:
        try:
            return self.git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        except subprocess.CalledProcessError:
            return None

    def create(self, owner: str, name: str, private: bool) -> bool:
        repo = self.path(owner, name)
        with self.lock:
            if repo.exists():
                return False
            repo.mkdir(parents=True)
            self.git(repo, "init", "--quiet", "--bare", "--initial-branch=main")
            self.private[f"{owner}/{name}"] = private
            self.commit(
                repo,
                "main",
                "initial commit",
                {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
            )
            return True

    def commit(
        self,
        repo: Path,
        branch: str,
        message: str,
        add: dict[str, bytes],
        delete: list[str] = (),
        delete_folders: list[str] = (),
        parent: str | None = None,
    ) -> str:
        """One commit on `branch`: `add` files, delete files and folders. Caller holds the lock."""
        head = self.head(repo, branch)
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if head:
                self.git(repo, "read-tree", head, env=env)
            listed = self.git(repo, "ls-files", "--cached", env=env).splitlines() if head else []
            doomed = set(delete) | {p for p in listed for d in delete_folders if p.startswith(d.rstrip("/") + "/")}
            for path in sorted(doomed):
                self.git(repo, "update-index", "--force-remove", path, env=env)
            for path, content in add.items():
                blob = self.git(repo, "hash-object", "-w", "--stdin", stdin=content)
                self.git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.git(repo, "write-tree", env=env)
        commit = self.git(repo, "commit-tree", tree, *(["-p", head] if head else []), "-m", message)
        self.git(repo, "update-ref", f"refs/heads/{branch}", commit, *([head] if head else []))
        return commit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WriteStandIn

    def log_message(self, format, *args):  # quiet: the tests print what matters
        pass

    # -- plumbing --------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None or self.headers.get("authorization") == f"Bearer {token}":
            return True
        self._json(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def _proxy(self, body: bytes | None) -> None:
        """Forward to olah as it came; olah's answer goes back as it is."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.olah_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() in _HOP_BY_HOP or (key.lower() == "content-length" and self.command != "HEAD"):
                continue
            if key.lower() == "location":
                value = value.replace(f"127.0.0.1:{self.server.olah_port}", f"127.0.0.1:{self.server.port}")
            self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- the Hub's write API ---------------------------------------------------------------------
    def do_GET(self):
        self.server.requests.append(("GET", self.path))
        self._proxy(None)

    def do_HEAD(self):
        self.server.requests.append(("HEAD", self.path))
        self._proxy(None)

    def do_POST(self):
        self.server.requests.append(("POST", self.path))
        body = self._body()
        path = unquote(urlsplit(self.path).path)
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if path == "/api/repos/create":
            if self._authorized():
                self._create(json.loads(body))
            return
        match = re.fullmatch(r"/api/models/([^/]+)/([^/]+)/(preupload|commit)/(.+)", path)
        if match is None:
            return self._proxy(body)
        if not self._authorized():
            return
        owner, name, call, revision = match.groups()
        repo = self.server.repos.path(owner, name)
        if not repo.exists():
            return self._json(404, {"error": "Repository not found"})
        if call == "preupload":
            files = json.loads(body)["files"]
            return self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        self._commit(owner, name, repo, revision, body)

    def _create(self, payload: dict) -> None:
        owner = payload.get("organization") or "user"
        if payload.get("type", "model") != "model":
            return self._json(400, {"error": "this stand-in hosts model repos only"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))  # new and old clients
        created = self.server.repos.create(owner, payload["name"], private)
        url = f"http://127.0.0.1:{self.server.port}/{owner}/{payload['name']}"
        if not created:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        self._json(200, {"url": url})

    def _commit(self, owner: str, name: str, repo: Path, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"] if lines and lines[0]["key"] == "header" else {}
        add, delete, folders = {}, [], []
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file" and value.get("encoding") == "base64":
                add[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                delete.append(value["path"])
            elif key == "deletedFolder":
                folders.append(value["path"])
            else:
                return self._json(400, {"error": f"this stand-in takes regular uploads only, not {key!r}"})
        repos = self.server.repos
        with repos.lock:
            head = repos.head(repo, revision)
            if head is None:
                return self._json(404, {"error": f"Invalid rev id: {revision}"})
            if header.get("parentCommit") not in (None, head):
                return self._json(412, {"error": "A commit has happened since. Please refresh and try again."})
            oid = repos.commit(repo, revision, header.get("summary") or "commit", add, delete, folders)
        self._json(
            200,
            {
                "commitUrl": f"http://127.0.0.1:{self.server.port}/{owner}/{name}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            },
        )


class WriteStandIn(ThreadingHTTPServer):
    """Stands in for the Hub's write API (see the module docstring); reads go to olah."""

    daemon_threads = True

    def __init__(self, olah: Olah, token: str | None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.port = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.olah_port = olah.port
        self.repos = GitRepos(olah.mirrors)
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, name="hub-standin", daemon=True)

    def start(self) -> WriteStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)
