"""A registry on the Hugging Face Hub (or any server speaking its API), through huggingface_hub.

    NAMESPACE/zoo-index                  a model repo whose index.json is the registry's index
    NAMESPACE/minilm-l6.rotten-tomatoes.4bit-2of4   one repo per stub name (parts joined by '.')
    owner/name                           a plain repo id is uploaded to that repo as it is

An upload verifies the checkpoint, creates the repo (`create_repo`, `--private` when it is new), puts
every file of the checkpoint in one commit (`create_commit`; README.md, the model card, goes with it;
files a previous upload left and this one lacks are deleted in the same commit) and then records the
commit id as the revision in the index, by a commit to the index repo whose parent is the index it
read: when another upload got there first the commit is refused and the update is redone on the new
index. A pull downloads exactly the files the index lists, at that commit (`snapshot_download`).

The endpoint comes from --registry URL or `HF_ENDPOINT`; the token from --token, `HF_TOKEN`, or
huggingface_hub's login. The token goes into request headers only: it is never printed, logged or
written to disk by zoo. Connection failures are retried twice (0.5 s, then 1 s), each request with a
timeout (`ZOO_HUB_TIMEOUT`, default 10 s), and then fail with one line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from .. import __version__
from ..errors import ModelNotFoundError, RegistryError, RegistryUnreachableError
from .files import checkpoint_files, file_records, hidden_files, open_source
from .index import INDEX_FILE, Index, RevisionRecord, now, summary_of
from .names import ModelRef, check_file_name, hub_repo_for, is_repo_id, parse_name
from .types import Published, Resolved

INDEX_REPO = "zoo-index"
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_NAMESPACE = "zoo-registry"
RETRY_DELAYS_S = (0.5, 1.0)
INDEX_UPDATE_ATTEMPTS = 5
HUB_ONLY_FILES = {".gitattributes"}  # the Hub creates it in every repo; it is not part of a checkpoint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


class HubRegistry:
    kind = "hub"

    def __init__(
        self,
        endpoint: str | None = None,
        namespace: str | None = None,
        token: str | None = None,
        timeout_s: float | None = None,
    ):
        from huggingface_hub import HfApi

        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.namespace = namespace or os.environ.get("ZOO_HF_NAMESPACE") or DEFAULT_NAMESPACE
        self.token = token
        self.timeout_s = timeout_s or float(os.environ.get("ZOO_HUB_TIMEOUT") or 10)
        self.index_repo = f"{self.namespace}/{INDEX_REPO}"
        self.where = f"hub registry {self.endpoint} ({self.index_repo})"
        key = hashlib.sha256(f"{self.endpoint}\n{self.namespace}".encode()).hexdigest()[:12]
        self.cache_key = f"hub-{key}"
        self.api = HfApi(endpoint=self.endpoint, token=token, library_name="zoo", library_version=__version__)

    # -- requests, with bounded retries and errors that say what to do --------------------------
    def _call(self, what: str, fn, *args, keep: tuple[int, ...] = (), **kwargs):
        """fn(*args, **kwargs), retried on connection failures and 5xx answers. HTTP errors with a status
        in `keep`, and not-found errors, reach the caller; any other becomes a one-line RegistryError."""
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.utils import httpx  # its own HTTP client (httpx2): transport errors mean "unreachable"

        last: BaseException | None = None
        for delay in (*RETRY_DELAYS_S, None):
            try:
                return fn(*args, **kwargs)
            except OfflineModeIsEnabled:
                raise RegistryError(
                    f"cannot {what}: HF_HUB_OFFLINE is set", hint="unset HF_HUB_OFFLINE, or use --registry local"
                ) from None
            except (httpx.TransportError, LocalEntryNotFoundError) as exc:  # snapshot_download wraps the former
                last = exc
            except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError):
                raise
            except HfHubHTTPError as exc:
                status = _status(exc)
                if status in keep:
                    raise
                if status in (401, 403):
                    raise RegistryError(
                        f"cannot {what}: {self.endpoint} refused the credentials (HTTP {status})",
                        hint="pass a token with write access to the namespace: --token or HF_TOKEN",
                    ) from None
                if status not in (500, 502, 503, 504):
                    message = getattr(exc, "server_message", None) or _first_line(exc)
                    raise RegistryError(f"cannot {what}: {self.endpoint} answered HTTP {status}: {message}") from None
                last = exc
            if delay is not None:
                time.sleep(delay)
        assert last is not None  # every attempt that neither returned nor raised kept its error
        raise RegistryUnreachableError(
            f"cannot {what}: no answer from {self.endpoint} after {len(RETRY_DELAYS_S) + 1} attempts "
            f"({_first_line(last)})",
            hint="is the server up? --registry URL (or HF_ENDPOINT) names it",
        )

    # -- the index --------------------------------------------------------------------------------
    def read_index(self) -> Index:
        return self._read_index()[0]

    def _read_index(self) -> tuple[Index, str | None]:
        """The index and the index repo's commit it was read at (None: no index repo yet)."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        try:
            info = self._call(
                "read the index", self.api.model_info, self.index_repo, revision="main", timeout=self.timeout_s
            )
        except RepositoryNotFoundError:
            return Index(), None
        if not any(s.rfilename == INDEX_FILE for s in info.siblings or []):
            return Index(), info.sha  # the repo exists, the first upload has not written the index yet
        url = hf_hub_url(self.index_repo, INDEX_FILE, revision=info.sha, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token, library_name="zoo", library_version=__version__)

        def get():
            response = get_session().get(url, headers=headers, timeout=self.timeout_s)
            hf_raise_for_status(response)
            return response.content

        try:
            text = self._call("read the index", get, keep=(404,))
        except (HfHubHTTPError, RemoteEntryNotFoundError):  # a repo without index.json: an empty index
            return Index(), info.sha
        return Index.parse(text, self.where), info.sha

    def _update_index(self, name: str, revision: str, record: RevisionRecord) -> None:
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError

        for _ in range(INDEX_UPDATE_ATTEMPTS):
            index, parent = self._read_index()
            if parent is None:
                self._call("create the index repo", self.api.create_repo, self.index_repo, exist_ok=True)
                continue
            index.add(name, revision, record)
            operation = CommitOperationAdd(INDEX_FILE, index.dump().encode())
            try:
                self._call(
                    "update the index",
                    self.api.create_commit,
                    self.index_repo,
                    [operation],
                    commit_message=f"zoo: {name} -> {revision}",
                    parent_commit=parent,
                    keep=(409, 412),
                )
                return
            except HfHubHTTPError:  # 409/412: the index moved since it was read; redo on the new one
                continue
        raise RegistryError(
            f"the index of {self.where} kept changing; {INDEX_UPDATE_ATTEMPTS} attempts to update it failed",
            hint="try the upload again",
        )

    # -- upload and pull --------------------------------------------------------------------------
    def _repo_for(self, ref: ModelRef, index: Index) -> str:
        entry = index.models.get(ref.name)
        current = entry.revisions[entry.main].repo if entry is not None else None
        if current:
            return current
        repo = hub_repo_for(ref.name, self.namespace, stub=ref.stub)
        for other, record in index.models.items():
            if other != ref.name and any(r.repo == repo for r in record.revisions.values()):
                raise RegistryError(
                    f"{ref.name} would be stored in {repo}, which already holds {other}",
                    hint="choose a name that differs by more than '/' vs '.'",
                )
        return repo

    def upload(self, src: Path, name: str, *, private: bool = False, include_hidden: bool = False) -> Published:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        ref = parse_name(name)
        if ref.revision is not None:
            raise RegistryError(f"{name!r}: the registry assigns revisions", hint="upload without @REVISION")
        ckpt = open_source(src)
        ckpt.verify_files()
        skipped = [] if include_hidden else hidden_files(src)
        names = checkpoint_files(src, skip=set(skipped))
        files = file_records(src, names)
        additions = [CommitOperationAdd(n, src / n) for n in names]  # each hashes its file again
        changed = [op.path_in_repo for op in additions if op.upload_info.sha256.hex() != files[op.path_in_repo].sha256]
        if changed:
            raise RegistryError(f"{src}: {changed[0]} changed while it was being read for upload; nothing was uploaded")
        repo = self._repo_for(ref, self.read_index())
        self._call(f"create {repo}", self.api.create_repo, repo, private=private, exist_ok=True)
        present = self._call(f"list {repo}", self.api.list_repo_files, repo, revision="main")
        operations: list[CommitOperationAdd | CommitOperationDelete] = list(additions)
        operations += [CommitOperationDelete(p) for p in present if p not in files and p not in HUB_ONLY_FILES]
        commit = self._call(
            f"upload to {repo}", self.api.create_commit, repo, operations, commit_message=f"zoo upload {ref.name}"
        )
        record = RevisionRecord(
            created=now(), files=files, summary=summary_of(ckpt.manifest, files), repo=repo, private=private
        )
        self._update_index(ref.name, commit.oid, record)
        return Published(
            name=ref.name,
            revision=commit.oid,
            location=f"{self.endpoint}/{repo}",
            nfiles=len(files),
            nbytes=record.summary.total_nbytes,
            skipped=skipped,
        )

    def resolve(self, ref: ModelRef) -> Resolved:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        index = self.read_index()
        if ref.name in index.models or ref.stub or not is_repo_id(ref.name):
            revision, record = index.lookup(ref, self.where)
            return Resolved(name=ref.name, revision=revision, files=record.files, record=record, repo=record.repo)
        # a plain repo id the index does not list: the repo's own listing, checked against its manifest
        try:
            info = self._call(
                f"look up {ref.name}",
                self.api.model_info,
                ref.name,
                revision=ref.revision or "main",
                timeout=self.timeout_s,
            )
        except (RepositoryNotFoundError, RevisionNotFoundError):
            error = index.not_found(ref, self.where)
            at = f" at revision {ref.revision}" if ref.revision else ""
            raise ModelNotFoundError(f"{error}; no hub repo {ref.name}{at} either", hint=error.hint) from None
        names = [s.rfilename for s in info.siblings or [] if s.rfilename not in HUB_ONLY_FILES]
        for n in names:
            check_file_name(n, f"{self.endpoint}/{ref.name}")
        return Resolved(name=ref.name, revision=info.sha, files=sorted(names), repo=ref.name)

    def fetch(self, resolved: Resolved, dest: Path) -> None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        where = f"{self.endpoint}/{resolved.repo}"
        names = sorted(resolved.files)
        for n in names:
            check_file_name(n, where)
        try:
            self._call(
                f"download {resolved.repo}@{resolved.revision[:12]}",
                snapshot_download,
                resolved.repo,
                revision=resolved.revision,
                local_dir=dest,
                allow_patterns=names,
                endpoint=self.endpoint,
                token=self.token,
                etag_timeout=self.timeout_s,
            )
        except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError) as exc:
            raise RegistryError(
                f"{where} at {resolved.revision[:12]} lacks what the index lists: {_first_line(exc)}",
                hint="the repo was changed behind the index; upload the model again",
            ) from None
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's download metadata
