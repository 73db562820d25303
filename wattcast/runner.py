"""`wattcast run` (in progress)."""
import argparse


def add_run_args(parser: argparse.ArgumentParser) -> None:
    pass


def run_command(args: argparse.Namespace) -> int:
    raise NotImplementedError
