"""The loader's one error type for what cannot be loaded or run here."""


class LoaderError(RuntimeError):
    """The library cannot be loaded or run here (bad manifest, wrong hash, no way to run the ISA)."""
