"""Load a zoo checkpoint with the right transformers class, in the chosen execution mode."""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from formats.errors import ZooError

from .quantizer import QUANT_METHOD, ZooConfig
from .runtime import DEFAULT_MODE, check_mode

# task -> Auto class name in transformers
TASKS = {
    "feature-extraction": "AutoModel",
    "fill-mask": "AutoModelForMaskedLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "image-classification": "AutoModelForImageClassification",
    "audio-classification": "AutoModelForAudioClassification",
    "automatic-speech-recognition": "AutoModelForCTC",
    "translation": "AutoModelForSeq2SeqLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
}


VERBOSE_ENV = "ZOO_VERBOSE"  # set (`zoo --verbose`) to see every transformers bar and load report


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextmanager
def quiet_transformers(*, keep_warnings: bool = False):
    """Hide transformers' per-file "Loading weights" bars and, unless `keep_warnings`, its warnings (the LOAD
    REPORT of keys a zoo command expects to differ, like a new head's): zoo reports its own progress and
    problems. Nothing is hidden when ZOO_VERBOSE is set."""
    from transformers.utils import logging as hf_logging

    if verbose():
        yield
        return
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    if not keep_warnings:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def read_config(path_or_id: str | Path, **kwargs) -> dict:
    """config.json of a local directory or a hub repo (through transformers' cache), as a dict."""
    from transformers.utils import cached_file

    path = cached_file(str(path_or_id), "config.json", **{k: v for k, v in kwargs.items() if k in ("revision", "token")})
    return json.loads(Path(path).read_text())


def model_class(task: str | None, config: dict):
    """The class to load with: the Auto class of `task`, else the architecture config.json names."""
    import transformers

    if task is not None:
        if task not in TASKS:
            raise ZooError(f"unknown task {task!r}", hint=f"choose one of {', '.join(TASKS)}")
        return getattr(transformers, TASKS[task])
    arch = (config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    return cls if cls is not None else transformers.AutoModel


def load(path_or_id: str | Path, *, task: str | None = None, mode: str = DEFAULT_MODE, **kwargs):
    """`from_pretrained` for zoo checkpoints (and plain ones): picks the class, sets the mode."""
    mode = check_mode(mode)
    config = read_config(path_or_id, **kwargs)
    cls = model_class(task, config)
    quantization = config.get("quantization_config")
    # another method's checkpoint (bitsandbytes, GPTQ...) is transformers' business, not a zoo one
    quantized = isinstance(quantization, dict) and quantization.get("quant_method") == QUANT_METHOD
    if quantized:
        kwargs["quantization_config"] = ZooConfig(mode=mode)
    elif mode != DEFAULT_MODE:
        raise ZooError(f"{path_or_id} is not a zoo checkpoint, so mode={mode!r} does not apply")
    with warnings.catch_warnings(), quiet_transformers(keep_warnings=True):  # no bars; a LOAD REPORT still shows
        # transformers warns that a passed quantization_config meets the checkpoint's; that is the point here
        warnings.filterwarnings("ignore", message=".*already has a `quantization_config` attribute.*")
        return cls.from_pretrained(path_or_id, **kwargs)

