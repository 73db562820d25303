"""What every trained artifact records, written one way: its version, the library versions, its validation scores.

Used by the trainers of the LSTMs (:mod:`wattcast.training`), the boosters
(:mod:`wattcast.gbm_training`) and rls (:mod:`wattcast.rls_training`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wattcast import __version__
from wattcast.evaluation import Scores, evaluate
from wattcast.forecasters.base import Model

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def stamp(name: str, weights: Path) -> dict[str, str]:
    """``version`` (name, day, digest of the weights file) and ``trained_at`` of a new artifact."""
    now = datetime.now(UTC)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    return {"version": f"{name}-{now:%Y%m%d}-{digest}", "trained_at": now.isoformat(timespec="seconds")}


def versions(**libraries: str) -> dict[str, str]:
    """The versions an artifact was made with: wattcast, Python, NumPy and ``libraries``."""
    return {"wattcast": __version__, "python": platform.python_version(), **libraries, "numpy": np.__version__}


def window(frame: pd.DataFrame) -> list[str]:
    """First and last reading time of a training frame."""
    return [frame["datetime"].iloc[0].strftime(TIME_FORMAT), frame["datetime"].iloc[-1].strftime(TIME_FORMAT)]


def write_with_validation(target: Path, meta: dict[str, Any], load: Callable[[Path], Model], val: pd.DataFrame) -> Scores:
    """Write ``meta``, score the artifact as the nodes load it (``load``) on ``val``, and write the scores into it."""
    (target / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    scores = evaluate(load(target), val)
    meta["validation"] = {**scores.to_dict(), "split": "validation", "targets": "every window whose target is in the split"}
    (target / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return scores
