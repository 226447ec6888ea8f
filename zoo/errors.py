"""zoo's errors: the format errors from `formats`, plus the causes that belong to zoo."""

from zoo.formats.errors import (  # noqa: F401  (re-exported: one place to import errors from)
    ChecksumError,
    CodecError,
    FormatError,
    ManifestError,
    OutputExistsError,
    PatternError,
    ZooError,
)


class RecipeError(ZooError):
    """A recipe is unknown, invalid, or does not fit the model."""


class ModelNotFoundError(ZooError):
    """A model name resolved to nothing: not a directory, not on the hub, not packaged."""


class UnsupportedModelError(ZooError):
    """transformers cannot build the model's architecture, so zoo cannot tell its layers apart."""


class RegistryError(ZooError):
    """A registry cannot be used as asked: bad name, unsafe file name, refused credentials, bad index."""


class RegistryUnreachableError(RegistryError):
    """A remote registry did not answer after a bounded number of attempts."""
