"""wattcast: replay a smart meter over MQTT and score live 5-minute-ahead forecasts."""

__version__ = "0.1.0"
