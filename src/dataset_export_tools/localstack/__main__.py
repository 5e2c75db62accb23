"""python -m dataset_export_tools.localstack up|down|status [--state-dir DIR]

Exit status: 0 on success; 1 when `up` or `down` failed; for `status`, 3 when a part is not
running and answering (as LSB init scripts do, so scripts can test it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dataset_export_tools.localstack.parts import PART_NAMES
from dataset_export_tools.localstack.stack import StackConfig, StackError, down, status, up


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        type=Path,
        help="where pids/, logs/, data/, webhooks/ and stack.env live (default: <repo>/.local)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m dataset_export_tools.localstack",
        description="Run the Dataset Webhook Export stack locally on emulators.",
        epilog="Ports: DWE_SUBMIT_PORT .. DWE_SCHEDULER_PORT (18081-18088); project: "
        "GOOGLE_CLOUD_PROJECT (dwe-local); dataset size: DWE_DATASET_ROWS (1000000).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser(
        "up", parents=[common], help="start what is not running, create resources"
    )
    start.add_argument(
        "--no-dataset", action="store_true", help="skip generating and uploading the dataset"
    )
    start.add_argument(
        "--only",
        metavar="PARTS",
        help=f"comma-separated parts to start (of {','.join(PART_NAMES)})",
    )
    commands.add_parser("down", parents=[common], help="stop every recorded process")
    commands.add_parser("status", parents=[common], help="one line per part")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = StackConfig.from_env(state_dir=args.state_dir)
        if args.command == "up":
            if args.no_dataset:
                config = dataclasses.replace(config, prepare_dataset=False)
            if args.only:
                parts = frozenset(p.strip() for p in args.only.split(",") if p.strip())
                config = dataclasses.replace(config, parts=parts)
            up(config)
            return 0
        if args.command == "down":
            down(config)
            return 0
        lines = status(config)
        for line in lines:
            print(line.line())
        return 0 if all(s.running and s.answering for s in lines) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
