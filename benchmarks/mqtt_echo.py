"""CPU per message of a node's MQTT path: receive a QoS 1 message, publish a QoS 1 answer, acknowledge.

A private mosquitto; a driver publishes ``--messages`` readings with at most ``--window`` in
flight (as the simulator does) and awaits the answers; the echo node (a subprocess with an
``MqttBus`` and the node loop's ``drain``) answers each one and reports its CPU time from its
first message to its last acknowledgement.  Prints the figures and writes JSON (``--out``).

    python benchmarks/mqtt_echo.py --repeat 5 --out echo.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PAYLOAD = b'{"house": "h000", "seq": 123, "ts": 1700000000, "global_active_power": 1.234, "voltage": 240.1}'


def echo(url: str, messages: int) -> None:
    from wattcast.bus import BrokerConfig, MqttBus
    from wattcast.node import drain

    bus = MqttBus(BrokerConfig.from_url(url), "echo", manual_ack=True).connect()
    bus.subscribe("in/#", timeout=5)
    print("ready", flush=True)
    n, start = 0, None
    while n < messages:
        batch = drain(bus, 512, 0.5)
        if batch and start is None:
            start = time.process_time()
        with bus.batched():
            for m in batch:
                bus.publish("out/x", m.payload)
            for m in batch:
                bus.ack(m)
        n += len(batch)
    bus.flush()
    assert start is not None
    cpu = time.process_time() - start
    bus.close()
    print(json.dumps({"us_per_message": round(cpu / messages * 1e6, 1)}), flush=True)


def one_run(messages: int, window: int) -> float:
    from wattcast.broker import PrivateBroker
    from wattcast.bus import BrokerConfig, MqttBus
    from wattcast.node import drain

    with PrivateBroker() as broker:
        node = subprocess.Popen(
            [sys.executable, __file__, "--echo", broker.url, "--messages", str(messages)], stdout=subprocess.PIPE, text=True
        )
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        driver = MqttBus(BrokerConfig.from_url(broker.url), f"driver-{os.getpid()}", session=False).connect()
        driver.subscribe("out/#", timeout=5)
        sent = answered = 0
        while answered < messages:
            while sent < messages and sent - answered < window:
                driver.publish("in/h000", PAYLOAD)
                sent += 1
            answered += len(drain(driver, 512, 5))
        result = json.loads(node.stdout.readline())
        node.wait(timeout=30)
        driver.close()
    return result["us_per_message"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--window", type=int, default=10, help="messages in flight (default 10, the simulator's)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="mqtt-echo.json")
    p.add_argument("--echo", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo:
        echo(args.echo, args.messages)
        return 0
    runs = []
    for _ in range(args.repeat):
        runs.append(one_run(args.messages, args.window))
        print(f"{runs[-1]:.1f} us CPU per message", flush=True)
    median = statistics.median(runs)
    print(f"median {median:.1f} us CPU per message ({args.messages} messages, window {args.window})")
    with open(args.out, "w") as fh:
        json.dump({"messages": args.messages, "window": args.window, "us_per_message": runs, "median": median}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
