"""Registries: share compressed models by name, fetch them verified.

    from zoo import registry
    registry.upload("minilm-4bit-2of4", "zoo:minilm-l6/rotten-tomatoes/4bit-2of4")   # -> Published
    path = registry.pull("zoo:minilm-l6/rotten-tomatoes/4bit-2of4")                  # a verified local copy
    where, models = registry.list_models()                                            # -> Listing

Which registry (`--registry`, else `ZOO_REGISTRY`, else `local`):
  local              the folder `$ZOO_HOME` (default `$XDG_CACHE_HOME/zoo`, i.e. `~/.cache/zoo`)
  PATH               a local registry in another folder (a path with '/', or starting with '.' or '~')
  hf, hf:NAMESPACE   the Hugging Face Hub at `HF_ENDPOINT` (default huggingface.co); the index is the repo
                     NAMESPACE/zoo-index (NAMESPACE: `ZOO_HF_NAMESPACE`, default zoo-registry)
  http(s)://HOST[:PORT][/NAMESPACE]   a server speaking the Hub's API (a mirror, a private hub)

Pulled copies live in `$ZOO_HOME/cache/REGISTRY-KEY/NAME/REVISION`: every pull checks every file of
that copy (size and sha256 against the index, then `Checkpoint.open`: manifest, tensors and the sha256
of every file the manifest lists) before returning its path; see files.py for how.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ChecksumError, RegistryError
from .files import checkpoint_files, install, verify_files
from .hub import HubRegistry
from .index import Index, ListedModel, listing
from .local import LocalRegistry
from .names import STUB_PREFIX, ModelRef, parse_name
from .types import Listing, Published, Resolved

if TYPE_CHECKING:
    from .staging import StagedUpload, stage_upload, staged_upload

# Staging writes model cards (zoo.cards, and torch with the codecs): loaded on first use, so that listing a
# registry or resolving a name stays light. So is the format's reader, which `pull` verifies a copy with.
_STAGING = ("StagedUpload", "stage_upload", "staged_upload")


def __getattr__(name: str):
    if name in _STAGING:
        from . import staging

        return getattr(staging, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
REGISTRY_KINDS = "local, hf, hf:NAMESPACE, a folder path, or an http(s):// URL"


def zoo_home() -> Path:
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "zoo"


def _namespace(text: str | None, spec: str) -> str | None:
    if text and not _NAMESPACE.match(text):
        raise RegistryError(f"registry {spec!r}: {text!r} is not a hub namespace (a user or organization name)")
    return text or None


def open_registry(spec: str | None = None, *, token: str | None = None) -> LocalRegistry | HubRegistry:
    spec = spec or os.environ.get("ZOO_REGISTRY") or "local"
    if spec == "local":
        return LocalRegistry(zoo_home())
    if spec == "hf" or spec.startswith("hf:"):
        return HubRegistry(namespace=_namespace(spec[3:], spec), token=token)
    if spec.startswith(("http://", "https://")):
        url = urlsplit(spec)
        if not url.netloc:
            raise RegistryError(f"registry {spec!r} has no host")
        return HubRegistry(
            endpoint=f"{url.scheme}://{url.netloc}", namespace=_namespace(url.path.strip("/"), spec), token=token
        )
    if "://" not in spec and ("/" in spec or spec.startswith((".", "~")) or Path(spec).is_dir()):
        return LocalRegistry(Path(spec))
    raise RegistryError(f"unknown registry {spec!r}", hint=f"--registry takes {REGISTRY_KINDS}")


def upload(
    src: str | Path,
    name: str,
    *,
    registry: str | None = None,
    private: bool = False,
    token: str | None = None,
    include_hidden: bool = False,
) -> Published:
    """Verify the checkpoint in `src` and publish it under `name`; returns the revision it got. Hidden files
    (.env, .DS_Store...) stay behind unless `include_hidden` (Published.skipped names them)."""
    return open_registry(registry, token=token).upload(Path(src), name, private=private, include_hidden=include_hidden)


def pull(name: str, *, revision: str | None = None, registry: str | None = None, token: str | None = None) -> Path:
    """A verified local copy of `name` (a stub, a name in the index, or a hub repo id), fetched once
    into the cache and checked again on every pull."""
    reg = open_registry(registry, token=token)
    ref = parse_name(name, revision)
    resolved = reg.resolve(ref)
    target = zoo_home().joinpath("cache", reg.cache_key, *resolved.name.split("/"), resolved.revision)
    where = f"{reg.where} ({resolved.name}@{resolved.revision[:12]})"

    def verify(path: Path) -> None:
        from zoo.formats import Checkpoint

        if isinstance(resolved.files, dict):
            verify_files(path, resolved.files, where)
        elif checkpoint_files(path, where) != sorted(resolved.files):
            raise ChecksumError(f"{where}: the download does not hold the files the repo lists")
        manifest = Checkpoint.open(path).manifest  # and the sha256 of every file the manifest lists
        if not isinstance(resolved.files, dict) and not manifest.files:
            raise RegistryError(
                f"{where}: its manifest records no file hashes, so its files cannot be verified",
                hint="upload it with `zoo upload`, which records every file's sha256",
            )

    return install(target, zoo_home() / ".locks", lambda dest: reg.fetch(resolved, dest), verify)


def list_models(*, registry: str | None = None, token: str | None = None) -> Listing:
    """(where, models): one row per model in the registry's index, read from that index alone."""
    reg = open_registry(registry, token=token)
    return Listing(reg.where, listing(reg.read_index()))


__all__ = [
    "STUB_PREFIX",
    "HubRegistry",
    "Index",
    "ListedModel",
    "Listing",
    "LocalRegistry",
    "ModelRef",
    "Published",
    "Resolved",
    "StagedUpload",
    "list_models",
    "open_registry",
    "parse_name",
    "pull",
    "stage_upload",
    "staged_upload",
    "upload",
    "zoo_home",
]
