"""zoo: a model zoo and checkpoint registry for deeply compressed transformers.

    import zoo
    model = zoo.from_pretrained("minilm-4bit-2of4")                # the architecture in config.json
    model = zoo.from_pretrained("minilm-4bit-2of4", task="text-classification", mode="packed")

`import zoo` also teaches plain transformers the "zoo" quantization method, so
`AutoModel.from_pretrained(DIR)` rebuilds compressed layers instead of leaving them random.
"""

from ._register import register_with_transformers

register_with_transformers()


def __getattr__(name: str):
    # Loaded on first use, so that `import zoo` (and the `zoo` command's start, before its Ctrl-C handler is in
    # place) stays light: importlib.metadata alone takes a tenth of a second to import, and zoo.errors is
    # needed only once something fails.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("zoo-compress")
        except PackageNotFoundError:  # running from a source tree that was not installed
            return "0.0.0+source"
    if name == "ZooError":
        from .errors import ZooError

        return ZooError
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def from_pretrained(
    path_or_id, *, task: str | None = None, mode: str = "materialize", registry: str | None = None, **kwargs
):
    """Load a zoo checkpoint (a directory, a Hugging Face id, or a registry stub `zoo:NAME[@REVISION]`)
    with the right transformers class. A stub is pulled first (`zoo.registry.pull`: fetched into the
    cache and verified) from `registry` (default: $ZOO_REGISTRY, else the local registry); `revision`
    and `token` then apply to the pull.

    task: None picks the architecture named in config.json; otherwise one of loaders.TASKS
        ("text-classification", "image-classification", "translation", ...).
    mode: "materialize" (decode once: dense speed), "packed" (decode per forward: least memory),
        "kernel" (int8 matmuls / Kronecker products where the codec allows; see README).
    compile: True compiles the model in place with torch.compile (kernel mode's int8 layers about 2x faster
        after warm-up; the first forward of each input shape compiles; see README).
    Other keyword arguments go to transformers' from_pretrained (revision, token, dtype, device_map...).
    """
    from zoo.loaders import load

    if isinstance(path_or_id, str) and path_or_id.startswith("zoo:"):
        from .registry import pull

        path_or_id = pull(
            path_or_id, revision=kwargs.pop("revision", None), registry=registry, token=kwargs.pop("token", None)
        )
    elif registry is not None:
        from .errors import ZooError

        raise ZooError(f"registry= applies to zoo: stubs only, not {path_or_id!r}", hint="write the name as zoo:NAME")
    return load(path_or_id, task=task, mode=mode, **kwargs)


__all__ = ["ZooError", "__version__", "from_pretrained"]
