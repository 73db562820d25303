"""Collector: matches forecasts to actual readings, scores them, stores everything, builds reports."""
