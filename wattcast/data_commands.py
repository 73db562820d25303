"""``wattcast data``: get, inspect, cut the meter data, or copy the example of your own meter's CSV."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wattcast.config import add_data_args, columns_from_args


def cmd_data_download(args: argparse.Namespace) -> int:
    from wattcast.download import download_dataset

    path = download_dataset(
        url=args.url, cache_dir=Path(args.cache_dir) if args.cache_dir else None, sha256=args.sha256, force=args.force
    )
    print(path)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from wattcast.data import load_split

    split = load_split(args.data, args.fraction, args.seed, columns_from_args(args))
    print(json.dumps(split.info, indent=2))
    return 0


def cmd_data_example(args: argparse.Namespace) -> int:
    import shutil

    from wattcast.data import example_path

    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} exists; pass another --out")
    shutil.copyfile(example_path(), out)
    print(f"wrote {out}: four synthetic days of a meter, power in W and voltage; run it with")
    print(f"  wattcast run --data {out} --time-col timestamp --value-col power_W --unit W --field voltage=voltage_V")
    return 0


def cmd_data_extract(args: argparse.Namespace) -> int:
    from wattcast.data import DEFAULT_FRACTION, extract_block

    n = extract_block(args.data, args.out, args.fraction or DEFAULT_FRACTION, args.seed)
    print(f"wrote {n} rows to {args.out}")
    return 0


def add_data_commands(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    """The ``data`` subcommand and its actions, on ``wattcast``'s subparsers."""
    d = sub.add_parser("data", help="get, inspect or cut the meter data")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dl = dsub.add_parser("download", help="fetch the UCI archive to a local cache and verify it")
    dl.add_argument("--url", default=None, help="archive URL (default: the UCI repository's zip)")
    dl.add_argument("--cache-dir", default=None, help="where to keep it (default: ~/.cache/wattcast)")
    dl.add_argument("--sha256", default=None, help="expected SHA-256 of household_power_consumption.txt")
    dl.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    dl.set_defaults(func=cmd_data_download)
    di = dsub.add_parser("info", help="print the split facts of a data file")
    add_data_args(di)
    di.set_defaults(func=cmd_data_info)
    dx = dsub.add_parser("example", help="copy the example of your own meter's CSV here, and say how to run it")
    dx.add_argument("--out", default="example_meter.csv", help="where to write it (default: %(default)s)")
    dx.set_defaults(func=cmd_data_example)
    de = dsub.add_parser("extract", help="write the notebook's block of a UCI file, in the UCI format")
    add_data_args(de)
    de.add_argument("--out", required=True, help="output file (.txt or .txt.gz)")
    de.set_defaults(func=cmd_data_extract)
