"""``wattcast watch`` and ``wattcast dashboard``: follow a running deployment, in a terminal or a browser."""

from __future__ import annotations

import argparse
from pathlib import Path

from wattcast.config import add_broker_args, port_number, positive_float, positive_int


def cmd_watch(args: argparse.Namespace) -> int:
    from wattcast.config import broker_from_args
    from wattcast.watch import watch

    return watch(broker_from_args(args), houses=args.houses, duration=args.duration)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from wattcast.config import broker_from_args
    from wattcast.dashboard import dashboard

    url_file = Path(args.url_file) if args.url_file else None
    try:
        return dashboard(
            broker_from_args(args),
            args.host,
            args.port,
            args.houses,
            url_file,
            args.keep_minutes,
            tuple(args.allow_host),
        )
    except OSError as exc:
        if isinstance(exc, ConnectionError):
            raise
        raise OSError(f"cannot serve the dashboard on {args.host}:{args.port}: {exc.strerror or exc}") from None


def add_viewer_commands(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    w = sub.add_parser("watch", help="follow the metrics of a running deployment")
    add_broker_args(w)
    w.add_argument("--houses", nargs="*", default=None, help="houses to follow (default: all)")
    w.add_argument("--duration", type=positive_float, default=None, help="stop after this many seconds")
    w.set_defaults(func=cmd_watch)

    d = sub.add_parser("dashboard", help="serve a live web page of a running deployment")
    add_broker_args(d)
    d.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default %(default)s)")
    d.add_argument("--port", type=port_number, default=8050, help="port of the page (default %(default)s; 0: a free one)")
    d.add_argument("--houses", nargs="*", default=None, help="houses whose readings and forecasts to draw (default: all)")
    d.add_argument(
        "--keep-minutes", type=positive_int, default=180, help="minutes of each house's readings kept (default %(default)s)"
    )
    d.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page may be asked for besides loopback ones (repeat; e.g. the machine's name on your LAN)",
    )
    d.add_argument("--url-file", default=None, help="write the page's URL to this file once it is served")
    d.set_defaults(func=cmd_dashboard)
