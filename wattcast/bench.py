"""`wattcast bench` (in progress)."""
import argparse


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    pass


def bench_command(args: argparse.Namespace) -> int:
    raise NotImplementedError
