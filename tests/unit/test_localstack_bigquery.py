"""The local stack's optional BigQuery emulator: opt-in by DWE_ENGINE, its two ports, its
virtualenv stamp and its command (the emulator itself runs in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_export_tools.localstack import bqemulator, functions, provisioning
from dataset_export_tools.localstack.parts import BIGQUERY, DEFAULT_PART_NAMES, PART_NAMES
from dataset_export_tools.localstack.stack import (
    Ports,
    StackConfig,
    StackError,
    _keep_running_part_settings,
    status,
)

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


KEYS = {"EXPORT_KEY_ENCRYPTION_KEY": "k", "EXPORT_LINK_SIGNING_KEY": "l"}


def test_dwe_engine_bigquery_points_the_process_function_at_the_demo_table() -> None:
    """With the emulator the functions get bq://<project>.listings.rental_listings, the
    temporary dataset and both emulator endpoints, and stack.env says DWE_ENGINE=bigquery;
    without it the Parquet file in the datasets bucket and no BigQuery setting."""
    ports = {"DWE_BIGQUERY_PORT": "24390", "DWE_BIGQUERY_GRPC_PORT": "24391"}
    config = from_env(DWE_ENGINE="bigquery", GOOGLE_CLOUD_PROJECT="dwe-demo", **ports)
    env = functions.function_env(config, KEYS)
    assert env["EXPORT_DATASET_URI"] == "bq://dwe-demo.listings.rental_listings"
    assert env["EXPORT_BIGQUERY_TEMP_DATASET"] == "dwe-demo.dwe_tmp"
    assert env["BIGQUERY_EMULATOR_HOST"] == "http://127.0.0.1:24390"
    assert env["BIGQUERY_EMULATOR_GRPC_HOST"] == "127.0.0.1:24391"
    assert provisioning.stack_env(config, env, None)["DWE_ENGINE"] == "bigquery"

    duckdb = from_env(GOOGLE_CLOUD_PROJECT="dwe-demo", **ports)
    env = functions.function_env(duckdb, KEYS)
    assert env["EXPORT_DATASET_URI"] == f"gs://{duckdb.datasets_bucket}/rental_listings.parquet"
    assert not {k for k in env if "BIGQUERY" in k}
    assert provisioning.stack_env(duckdb, env, None)["DWE_ENGINE"] == "duckdb"


def test_a_running_process_function_keeps_its_engine_and_stack_env_says_so() -> None:
    """`up` with DWE_ENGINE=bigquery on a stack whose process function runs DuckDB warns, and
    stack.env keeps the engine that runs."""
    duckdb = functions.function_env(from_env(), KEYS)
    asked = functions.function_env(from_env(DWE_ENGINE="bigquery"), KEYS)
    warnings: list[str] = []
    _keep_running_part_settings(dict(duckdb), asked, warnings.append)
    assert len(warnings) == 1
    assert "keeps EXPORT_DATASET_URI=" in warnings[0]
    assert "(asked: bq://dwe-local.listings.rental_listings)" in warnings[0]
    assert asked["EXPORT_DATASET_URI"] == duckdb["EXPORT_DATASET_URI"]
    assert "EXPORT_BIGQUERY_TEMP_DATASET" not in asked
    assert provisioning.stack_env(from_env(), asked, None)["DWE_ENGINE"] == "duckdb"
