"""python -m dataset_export_tools.localstack up|down|status [--state-dir DIR] | bqemulator-venv

Exit status: 0 on success; 1 when `up` or `down` failed; for `status`, 3 when a part is not
running and answering (as LSB init scripts do, so scripts can test it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dataset_export_tools.localstack import bqemulator
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
        epilog="Ports: DWE_SUBMIT_PORT .. DWE_SCHEDULER_PORT (18081-18088), DWE_BIGQUERY_PORT and "
        "DWE_BIGQUERY_GRPC_PORT (18089, 18090); project: GOOGLE_CLOUD_PROJECT (dwe-local); "
        "dataset size: DWE_DATASET_ROWS (1000000); DWE_ENGINE=bigquery also starts the BigQuery "
        "emulator and loads the dataset into it.",
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
    commands.add_parser(
        "bqemulator-venv", help="build the BigQuery emulator's virtualenv if it is not up to date"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = StackConfig.from_env(state_dir=getattr(args, "state_dir", None))
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
        if args.command == "bqemulator-venv":
            if bqemulator.is_built(config.bigquery_venv, config.repo_root):
                print(f"{config.bigquery_venv} is up to date", file=sys.stderr)
            else:
                bqemulator.ensure_venv(config.bigquery_venv, config.repo_root)
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
