"""wattcast: replay a smart meter over MQTT and score live 5-minute-ahead forecasts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wattcast")  # one version: pyproject.toml's, as installed
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
