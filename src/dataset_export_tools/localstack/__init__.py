"""The local stack: Pub/Sub, Firestore and GCS emulators (and, opt-in, a BigQuery emulator), the
three functions and a demo webhook receiver, on 127.0.0.1
(`python -m dataset_export_tools.localstack up|down|status`).

For tests::

    config = StackConfig(state_dir=tmp, repo_root=find_repo_root(), ports=Ports.starting_at(28081))
    info = up(config)      # info.env is what went to <state_dir>/stack.env
    ...
    down(config)
"""

from dataset_export_tools.localstack.envfile import read_env_file, write_env_file
from dataset_export_tools.localstack.parts import PART_NAMES, Part
from dataset_export_tools.localstack.stack import (
    PartStatus,
    Ports,
    StackConfig,
    StackError,
    StackInfo,
    down,
    find_repo_root,
    probe,
    status,
    up,
)

__all__ = [
    "PART_NAMES",
    "Part",
    "PartStatus",
    "Ports",
    "StackConfig",
    "StackError",
    "StackInfo",
    "down",
    "find_repo_root",
    "probe",
    "read_env_file",
    "status",
    "up",
    "write_env_file",
]
