"""Every option of every entry point says what it does, in plain text (no RST markup)."""

from __future__ import annotations

import argparse

import pytest


def _parsers():
    from collector.__main__ import parse_args as collector_args
    from predictor.__main__ import parse_args as predictor_args
    from simulator.__main__ import parse_args as simulator_args
    from wattcast.cli import build_parser

    out = []

    def walk(p: argparse.ArgumentParser) -> None:
        out.append(p)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    for parse in (collector_args, predictor_args, simulator_args):
        captured = {}
        original = argparse.ArgumentParser.parse_args

        def grab(self, *a, captured=captured, **k):
            captured["p"] = self
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args = grab
        try:
            with pytest.raises(SystemExit):
                parse(["--model", "lstm"] if parse is predictor_args else [])
        finally:
            argparse.ArgumentParser.parse_args = original
        out.append(captured["p"])
    return out


def test_every_option_has_help_and_no_rst_backticks():
    parsers = _parsers()
    assert len(parsers) > 10
    for p in parsers:
        text = p.format_help()
        assert "``" not in text, (p.prog, text)
        for action in p._actions:
            if action.option_strings and action.help is None:
                raise AssertionError(f"{p.prog} {'/'.join(action.option_strings)} has no help")


def test_run_window_help_says_all_houses_together():
    from wattcast.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    window = next(a for a in sub.choices["run"]._actions if "--window" in a.option_strings)
    assert "all houses together" in window.help and "per house" not in window.help


def _python_blocks(path) -> list[str]:
    text = path.read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


@pytest.mark.integration
def test_the_docs_paho_examples_run_against_a_broker_without_credentials(broker, tmp_path):
    """They raised KeyError: 'WATTCAST_PASSWORD_VIEWER' against a broker that needs none."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("paho.mqtt")
    repo = Path(__file__).resolve().parents[1]
    for doc in (repo / "README.md", repo / "docs" / "contract.md"):
        (code,) = [b for b in _python_blocks(doc) if "paho" in b and "loop_forever" in b]
        script = tmp_path / "viewer.py"
        script.write_text(code)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTCAST_")}
        env.update(MQTT_HOST=broker.host, MQTT_PORT=str(broker.port))
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            proc.wait(3)  # it must still be running (subscribed) after 3 s
        except subprocess.TimeoutExpired:
            pass
        running = proc.poll() is None
        proc.kill()
        _, err = proc.communicate()
        assert running and "Traceback" not in err, (doc.name, err)
