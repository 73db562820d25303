"""Simulator: replays the validation split as live per-minute meter streams."""
