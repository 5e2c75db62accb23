"""The local stack's optional BigQuery emulator: opt-in by DWE_ENGINE, its two ports, its
virtualenv stamp and its command (the emulator itself runs in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_export_tools.localstack import bqemulator
from dataset_export_tools.localstack.parts import BIGQUERY, DEFAULT_PART_NAMES, PART_NAMES
from dataset_export_tools.localstack.stack import Ports, StackConfig, StackError, status

REPO = Path(__file__).resolve().parents[2]


def from_env(**env: str) -> StackConfig:
    return StackConfig.from_env(environ=env, cwd=REPO)


def test_the_bigquery_emulator_is_started_only_for_dwe_engine_bigquery() -> None:
    """Without DWE_ENGINE (or with duckdb) the stack leaves the emulator out; bigquery adds it."""
    assert BIGQUERY.optional
    assert "bigquery" in PART_NAMES
    assert "bigquery" not in DEFAULT_PART_NAMES
    assert StackConfig(state_dir=REPO, repo_root=REPO).parts == frozenset(DEFAULT_PART_NAMES)
    for env in ({}, {"DWE_ENGINE": ""}, {"DWE_ENGINE": "duckdb"}):
        assert not from_env(**env).enabled(BIGQUERY), env
    assert from_env(DWE_ENGINE="bigquery").parts == frozenset(PART_NAMES)
    assert from_env(DWE_ENGINE=" BigQuery ").enabled(BIGQUERY)
    with pytest.raises(StackError, match="DWE_ENGINE must be one of duckdb, bigquery"):
        from_env(DWE_ENGINE="spark")


def test_its_rest_and_grpc_ports_come_from_their_variables_and_must_differ() -> None:
    """DWE_BIGQUERY_PORT and DWE_BIGQUERY_GRPC_PORT set the two ports; a clash is refused."""
    ports = Ports.from_env({"DWE_BIGQUERY_PORT": "24290", "DWE_BIGQUERY_GRPC_PORT": "24291"})
    assert (ports.bigquery, ports.bigquery_grpc) == (24290, 24291)
    assert (Ports().bigquery, Ports().bigquery_grpc) == (18089, 18090)
    assert (Ports.starting_at(28081).bigquery, Ports.starting_at(28081).bigquery_grpc) == (
        28089,
        28090,
    )
    with pytest.raises(StackError, match="DWE_BIGQUERY_GRPC_PORT must be a port number"):
        Ports.from_env({"DWE_BIGQUERY_GRPC_PORT": "x"})
    clash = Ports.from_env({"DWE_BIGQUERY_GRPC_PORT": "18085"})
    with pytest.raises(StackError, match="Pub/Sub emulator and the BigQuery emulator's gRPC"):
        clash.validate()


def test_status_lists_the_emulator_only_when_enabled_or_recorded(tmp_path: Path) -> None:
    """A stack without the BigQuery emulator is complete: status does not list it as stopped."""
    config = StackConfig(state_dir=tmp_path, repo_root=REPO, ports=Ports.starting_at(1081))
    assert BIGQUERY not in [s.part for s in status(config)]
    enabled = StackConfig(
        state_dir=tmp_path, repo_root=REPO, ports=config.ports, parts=frozenset(PART_NAMES)
    )
    assert BIGQUERY in [s.part for s in status(enabled)]
    config.pids_dir.mkdir(parents=True)
    config.pidfile(BIGQUERY).write_text("999999999\n")  # recorded, even if long gone
    [shown] = [s for s in status(config) if s.part is BIGQUERY]
    assert not shown.running


def test_the_virtualenv_is_built_once_per_requirements_digest(tmp_path: Path) -> None:
    """The build stamp is named after the requirements' digest: an edit means a rebuild."""
    repo = tmp_path / "repo"
    requirements = repo / bqemulator.REQUIREMENTS
    requirements.parent.mkdir(parents=True)
    requirements.write_text("bqemulator==1.4.0\n")
    venv = tmp_path / "venv"
    assert not bqemulator.is_built(venv, repo)
    venv.mkdir()
    (venv / bqemulator._stamp(venv, requirements).name).touch()
    assert bqemulator.is_built(venv, repo)
    requirements.write_text("bqemulator==1.4.1\n")
    assert not bqemulator.is_built(venv, repo)


def test_the_repository_pins_every_distribution_with_hashes() -> None:
    """tools/bqemulator/requirements.txt pins bqemulator, DuckDB 1.5.5 and its extensions."""
    text = (REPO / bqemulator.REQUIREMENTS).read_text()
    for pin in ("bqemulator==1.4.0", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5"):
        assert f"\n{pin} \\\n    --hash=sha256:" in text, pin
    pinned = [line for line in text.splitlines() if line and not line[0].isspace()]
    pinned = [line for line in pinned if not line.startswith("#")]
    assert len(pinned) > 20
    assert all("==" in line for line in pinned), pinned


def test_the_emulator_runs_in_memory_on_loopback_with_its_own_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its HOME holds the extensions the build installed; BQEMU_* settings from the caller
    cannot override; its message cap is raised so that large record batches pass."""
    monkeypatch.setenv("BQEMU_REST_PORT", "1")
    monkeypatch.setenv("HOME", "/root")
    cmd, env = bqemulator.command(tmp_path, rest_port=24290, grpc_port=24291, project="dwe-x")
    assert cmd[:2] == [str(tmp_path / "bin" / "bqemulator"), "start"]
    args = " ".join(cmd[2:])
    assert "--rest-host 127.0.0.1 --rest-port 24290" in args
    assert "--grpc-host 127.0.0.1 --grpc-port 24291" in args
    assert "--project dwe-x --ephemeral" in args
    assert env["HOME"] == str(tmp_path / "home")
    assert {k: v for k, v in env.items() if k.startswith("BQEMU_")} == {
        "BQEMU_WRITE_API_MAX_REQUEST_BYTES": str(255 * 1024 * 1024)
    }
