"""What several test modules share (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

#: the repository's root (the checkout under test)
REPO = Path(__file__).resolve().parents[1]


class MemoryPipeline:
    """Simulator, one predictor per model and the collector wired through the in-memory hub; each
    :meth:`replay` runs the nodes one after the other over everything the replay published."""

    def __init__(self, store, models: tuple[str, ...]) -> None:
        from collector.node import CollectorNode
        from predictor.node import PredictorNode
        from wattcast.bus import MemoryHub
        from wattcast.contract import ALL_ENDS, ALL_FORECASTS, ALL_READINGS
        from wattcast.forecasters import load_model

        self.hub = MemoryHub()
        self.cbus = self.hub.connect()
        self.cbus.subscribe(ALL_READINGS, ALL_FORECASTS, ALL_ENDS)
        self.collector = CollectorNode(self.cbus, store, models)
        self.predictors = []
        for name in models:
            pbus = self.hub.connect()
            pbus.subscribe(ALL_READINGS, ALL_ENDS)
            self.predictors.append((pbus, PredictorNode(pbus, load_model(name))))

    def replay(self, part) -> str:
        """Replay the rows of ``part`` as one house; the run id.  The collector has scored it."""
        from simulator.replay import Simulator
        from simulator.streams import house_streams

        sim = Simulator(self.hub.connect(), house_streams(part, 1), progress=lambda line: None)
        sim.run()
        for pbus, node in self.predictors:
            node.handle([pbus.inbox.get_nowait() for _ in range(pbus.inbox.qsize())])
        self.collector.handle([self.cbus.inbox.get_nowait() for _ in range(self.cbus.inbox.qsize())])
        assert self.collector.tick()
        return sim.run_id


def stop_all(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM every process still running, then wait (kill after ``timeout`` seconds)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
