"""Load a zoo checkpoint with the right transformers class, in the chosen execution mode."""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from zoo.formats.errors import FormatError, ZooError
from zoo.formats.manifest import QUANT_METHOD
from zoo.formats.reader import CONFIG_FILE, read_config_file

from .guard import check_local
from .quantizer import ZooConfig
from .runtime import DEFAULT_MODE, check_mode

# task (a Hugging Face pipeline tag) -> the Auto class in transformers that loads a model for it; model cards
# (zoo.cards) name the same class in their loading example
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


logger = logging.getLogger("zoo")

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
    """config.json of a local directory or a hub repo (through transformers' cache), as a dict (read by
    zoo.formats' reader: a FormatError when it is not a JSON object)."""
    from transformers.utils import cached_file

    path = cached_file(str(path_or_id), CONFIG_FILE, **{k: v for k, v in kwargs.items() if k in ("revision", "token")})
    if path is None:  # transformers raises for a missing file unless told not to; None is its other answer
        raise FormatError(f"no {CONFIG_FILE} in {path_or_id}")
    return read_config_file(Path(path))


def transformers_class(name: str | None):
    """The class transformers exports under `name` (an architecture such as BertForMaskedLM), or None."""
    import transformers

    return getattr(transformers, name, None) if name else None


def architecture_class(config):
    """The class of the architecture config.json names (its first `architectures` entry), or None when it names
    none this transformers has. `config` is config.json as a dict, or transformers' config object."""
    names = config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)
    return transformers_class((names or [None])[0])


def model_class(task: str | None, config: dict):
    """The class to load with: the Auto class of `task`, else the architecture config.json names."""
    import transformers

    if task is not None:
        if task not in TASKS:
            raise ZooError(f"unknown task {task!r}", hint=f"choose one of {', '.join(TASKS)}")
        return getattr(transformers, TASKS[task])
    return architecture_class(config) or transformers.AutoModel


def fitting_class(path: str | Path, config: dict):
    """The class to load a local checkpoint with when no task is asked for: the one its manifest records (the
    class the weights filled when it was compressed), else config.json's, unless the weights hold none of that
    class's head (loaders.heads): then its base model's."""
    import transformers

    from .heads import weights_class

    q = config.get("quantization_config")
    recorded = transformers_class((q.get("base_model") or {}).get("architecture") if isinstance(q, dict) else None)
    if recorded is not None:
        return recorded
    named = model_class(None, config)
    return weights_class(path, named) if named is not transformers.AutoModel else named


# what transformers raises on a config or weight file it cannot make sense of; a load turns them into FormatError
_BROKEN = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
    RuntimeError,
    RecursionError,
    MemoryError,
    ZeroDivisionError,
    OverflowError,
    UnicodeError,
)


def load(
    path_or_id: str | Path,
    *,
    task: str | None = None,
    mode: str = DEFAULT_MODE,
    new_head: bool = False,
    verify: bool = False,
    compile: bool = False,
    **kwargs,
):
    """`from_pretrained` for zoo checkpoints (and plain ones): picks the class, sets the mode. Without `task`,
    a local checkpoint loads as the class its weights fill (fitting_class); either way, parameters the
    checkpoint lacks, initialised at random by transformers, are named in one warning, unless `new_head` says
    the caller builds a new head on purpose (to fine-tune it).

    `compile=True` compiles the loaded model in place (`model.compile()`: torch.compile, inductor), which fuses
    kernel mode's activation quantization and scaling with the elementwise work around each matmul (about 2x
    kernel mode's eager speed on our CPU, python -m bench.kernel). The first forward of each new input shape compiles
    (tens of seconds; a second shape recompiles once with dynamic shapes), and inductor needs a C++ compiler.

    Every failure is a ZooError: check_local runs first (with `verify`, every file's sha256 too), and what
    transformers raises on a broken file becomes a FormatError."""
    try:
        model = _load(path_or_id, task=task, mode=mode, new_head=new_head, verify=verify, **kwargs)
    except ZooError:
        raise
    except _BROKEN as exc:
        raise _broken(path_or_id, exc) from exc
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("safetensors", "huggingface_hub", "transformers"):
            raise
        raise _broken(path_or_id, exc) from exc
    if compile:
        (model[0] if isinstance(model, tuple) else model).compile()  # a tuple with output_loading_info=True
    return model


def _broken(path_or_id, exc: BaseException) -> FormatError:
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    hint = (
        "the checkpoint is broken or was edited; `zoo verify DIR` checks every file"
        if Path(str(path_or_id)).is_dir()
        else "check the model id, the network, and HF_TOKEN for a private repo"
    )
    return FormatError(f"cannot load {path_or_id}: {type(exc).__name__}" + (f": {text}" if text else ""), hint=hint)


def _load(
    path_or_id: str | Path,
    *,
    task: str | None = None,
    mode: str = DEFAULT_MODE,
    new_head: bool = False,
    verify: bool = False,
    **kwargs,
):
    mode = check_mode(mode)
    local = Path(str(path_or_id)).is_dir()
    if local:
        from zoo.formats import read_config as read_local_config

        config = read_local_config(Path(path_or_id))
        check_local(Path(path_or_id), config, verify=verify)
    elif str(path_or_id).startswith(("/", "./", "../", "~")) or Path(str(path_or_id)).exists():
        raise FormatError(f"{path_or_id} is not a model directory (it does not exist, or is a file)")
    else:
        config = read_config(path_or_id, **kwargs)
    cls = model_class(task, config)
    if task is None and local:
        fitted = fitting_class(path_or_id, config)
        if fitted is not cls and cls.__name__ != fitted.__name__:
            logger.warning(
                f"zoo: {path_or_id}'s weights hold no {cls.__name__} head, so it loads as "
                f"{fitted.__name__} (the model the weights are); pass task=... to add a new head"
            )
        cls = fitted
    quantization = config.get("quantization_config")
    # another method's checkpoint (bitsandbytes, GPTQ...) is transformers' business, not a zoo one
    quantized = isinstance(quantization, dict) and quantization.get("quant_method") == QUANT_METHOD
    if quantized:
        kwargs["quantization_config"] = ZooConfig(mode=mode)
    elif mode != DEFAULT_MODE:
        raise ZooError(f"{path_or_id} is not a zoo checkpoint, so mode={mode!r} does not apply")
    wants_info = kwargs.pop("output_loading_info", False)
    with warnings.catch_warnings(), quiet_transformers():  # zoo's own line below says what the LOAD REPORT would
        # transformers warns that a passed quantization_config meets the checkpoint's; that is the point here
        warnings.filterwarnings("ignore", message=".*already has a `quantization_config` attribute.*")
        model, info = cls.from_pretrained(path_or_id, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    if missing and not new_head:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        logger.warning(
            f"zoo: {len(missing)} parameters of {type(model).__name__} are not in {path_or_id} and were "
            f"initialised at random ({shown}): a new head, to fine-tune before use"
        )
    return (model, info) if wants_info else model
