"""A non-editable ``pip install .`` runs from any folder, without the checkout on ``sys.path``.

The checkout is copied (not the original: a build writes into it) into
``<tmp>/parent/wattcast`` and installed into a new venv (system site packages for the
dependencies, ``--no-deps``).  Then ``wattcast run`` and ``wattcast evaluate`` run with
``<tmp>/parent`` as the current folder (where a folder named ``wattcast`` would shadow the
package for ``python -m``) and from ``/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from wattcast.broker import available_kind
from wattcast.contract import MODELS

IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "runs", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv", "out"
)

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_") and k != "PYTHONPATH"}
    return env


def test_a_non_editable_install_runs_and_evaluates_from_any_folder(tmp_path):
    if available_kind() is None:
        pytest.skip("no MQTT broker installed (apt-get install mosquitto)")
    parent = tmp_path / "parent"
    clone = parent / "wattcast"
    shutil.copytree(REPO, clone, symlinks=True, ignore=IGNORE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, env=_env())
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(clone)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # the installed package, not the copy it was built from
    where = subprocess.run(
        [str(py), "-P", "-c", "import wattcast, simulator; print(wattcast.__file__, simulator.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        env=_env(),
        check=True,
    ).stdout
    assert str(venv) in where and str(clone) not in where, where
    shutil.rmtree(clone / "wattcast")  # nothing may come from the copy any more
    (clone / "wattcast").mkdir()  # ... but a folder of that name stays in the way
    cli = str(venv / "bin" / "wattcast")
    for cwd in (parent, Path("/")):
        store = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}" / "wattcast.db"
        run = subprocess.run(
            [cli, "run", "--limit", "40", "--quiet", "--json", "--store", str(store)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=_env(),
            timeout=300,
        )
        assert run.returncode == 0, f"from {cwd}: {run.stdout}\n{run.stderr}"
        result = json.loads(run.stdout)
        assert set(result["models"]) == set(MODELS)
        # 40 readings, forecasts from the 2nd on, 5 minutes ahead: 34 matched per model
        assert all(r["n"] == 34 for r in result["models"].values()), result["models"]
        ev = subprocess.run([cli, "evaluate", "--json"], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=300)
        assert ev.returncode == 0, f"from {cwd}: {ev.stderr}"
        scores = json.loads(ev.stdout)["models"]
        assert round(scores["lstm"]["mse"], 4) == 0.3376 and scores["lstm"]["n"] == 4093
