"""``wattcast run``: the whole pipeline on this machine, end to end.

A broker (the one given with ``--broker``, else a private mosquitto on a free
loopback port, else an embedded Python broker), then the collector and one
predictor per model as separate processes; once all report online, the
simulator.  When the collector has scored the end of the stream, everything is
stopped and the scores are printed (``--json`` for machines).
"""

from wattcast.runner.options import RunError, RunOptions, add_run_args
from wattcast.runner.pipeline import run
from wattcast.runner.summary import format_table, incomplete, run_command, scores_from_store

__all__ = ["RunError", "RunOptions", "add_run_args", "format_table", "incomplete", "run", "run_command", "scores_from_store"]
