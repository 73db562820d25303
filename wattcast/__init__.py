"""wattcast: replay a smart meter over MQTT and score live 5-minute-ahead forecasts."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``__version__``, read when asked (importlib.metadata costs every node ~30 ms of start-up)."""
    if name != "__version__":
        raise AttributeError(f"module 'wattcast' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wattcast")  # one version: pyproject.toml's, as installed
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
