"""Entry points as a scheduler runs them: arguments, config, exit codes, the demo end to end."""

from __future__ import annotations

import logging

import pytest

from jobs import demo, ingest, land


@pytest.fixture
def config_file(tmp_path, spark):
    path = tmp_path / "recllm.yaml"
    path.write_text(f"lake:\n  root: {tmp_path / 'lake'}\n  backend: deltars\n")
    return str(path)


def test_the_demo_lands_and_ingests_days_and_shows_a_sample(config_file, capsys):
    demo.cli(["--config", config_file, "--days", "2", "--users", "30", "--items", "40", "--log-level", "WARNING"])
    out = capsys.readouterr().out
    assert "== ds=2026-01-02" in out
    assert "events_raw: in=" in out and "quarantine" in out
    assert "Recent history of user" in out


def test_land_then_ingest_from_the_command_line_and_rerun_safely(config_file, spark, caplog):
    land.cli(["--config", config_file, "--days", "1", "--users", "20", "--items", "30", "--ds", "2026-03-01"])
    with caplog.at_level(logging.INFO):
        ingest.cli(["--ds", "2026-03-01", "--config", config_file, "--run-id", "r1"])
        ingest.cli(["--ds", "2026-03-01", "--config", config_file, "--run-id", "r2"])
    lines = [r.getMessage() for r in caplog.records if "events_raw: in=" in r.getMessage()]
    assert len(lines) == 2 and lines[0].split("events_raw")[1] == lines[1].split("events_raw")[1]


def test_a_bad_date_is_refused_before_anything_runs(config_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        ingest.cli(["--ds", "03/01/2026", "--config", config_file])
    assert exit_.value.code == 2
    assert "ds must be a date as YYYY-MM-DD" in capsys.readouterr().err


def test_a_malformed_config_fails_with_exit_1_naming_the_key(tmp_path, caplog):
    path = tmp_path / "bad.yaml"
    path.write_text("lake:\n  rooot: /tmp/x\n")
    with pytest.raises(SystemExit) as exit_:
        ingest.cli(["--ds", "2026-03-01", "--config", str(path)])
    assert exit_.value.code == 1
    assert "lake.rooot" in caplog.text
