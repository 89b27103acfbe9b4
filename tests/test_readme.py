"""The README's examples work as written: every code block of "Query the results" and
"Bring your own data" runs here, and the plain-words table descriptions match the tables."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from schemas import TABLES

README = Path(__file__).resolve().parent.parent / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def blocks(title: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(title), re.DOTALL)


def run_python(code: str, cwd: Path, where: str = "README.md") -> str:
    """The block run in this process (its Spark session is the tests' own), from `cwd`; what it printed."""
    printed, here = io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, where, "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(here)
    return printed.getvalue()


def run_bash(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """The block run by bash from `cwd`, with this interpreter's `recllm` console script first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_query_the_results_runs_as_written_on_the_demo_lake(small_demo):
    root = small_demo.root
    python, bash = blocks("Query the results", "python"), blocks("Query the results", "bash")
    assert len(python) == 2 and len(bash) == 1

    printed = "".join(run_python(code, root) for code in python)
    assert "user_id" in printed and "title" in printed
    assert TABLES["ctr_scores"].doc in printed
    assert "rows in version 0 of candidates" in printed

    shown = run_bash(bash[0], root).stdout
    assert re.search(r"^\s*click\s+\d+\s+\d+\s*$", shown, re.MULTILINE), shown
    ctr = pd.read_csv(root / "ctr.csv")
    assert list(ctr.columns) == ["ds", "model", "metric", "value", "n"]
    assert set(ctr["metric"]) == {"auc", "gauc", "logloss"}


@pytest.mark.parametrize("table", ["candidates", "ctr_scores", "cold_start_fills", "metrics", "models", "quarantine",
                                   "item_features"])
def test_the_readme_describes_each_result_table_and_column_as_the_table_does(table):
    text = section("Query the results")
    contract = TABLES[table]
    assert f"**`{table}`**: {contract.doc}" in text
    for column in contract.columns:
        assert f"| `{column.name}` | {column.type.simpleString()} | {column.doc} |" in text, column.name


@pytest.mark.slow  # three jobs, each its own Spark session
def test_bring_your_own_data_lands_ingests_and_quarantines_as_written(tmp_path):
    from tests.helpers import read_delta_rs

    python, bash = blocks("Bring your own data", "python"), blocks("Bring your own data", "bash")
    assert len(python) == 1 and len(bash) == 1
    run_python(python[0], tmp_path)

    shown = run_bash(bash[0], tmp_path).stdout
    assert re.search(r"events_raw\s+unparseable_ts\s+1", shown), shown
    events = read_delta_rs(str(tmp_path / "lake" / "events"))
    assert sorted(events["event_id"]) == ["e1", "e2", "e3"]
    assert len(read_delta_rs(str(tmp_path / "lake" / "items"))) == 3


def raw_contract_rows() -> dict[str, dict[str, str]]:
    """The README's raw-contract table as {table: {column: meaning, or None where a row names several}}; a row
    with an empty table cell continues the table above it."""
    said, table = {}, None
    for line in section("Bring your own data").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            table = cells[0].strip("`") or table
            columns = re.findall(r"`(\w+)`", cells[1])
            for column in columns:
                said.setdefault(table, {})[column] = cells[2] if len(columns) == 1 else None
    return said


@pytest.mark.parametrize("table", ["events_raw", "items_raw", "users_raw"])
def test_the_raw_contract_in_the_readme_lists_every_column_with_the_tables_meaning(table):
    said = raw_contract_rows()[table]
    assert set(said) == {c.name for c in TABLES[table].columns} - {"ds"}
    for column in TABLES[table].columns:
        if said.get(column.name) is not None:  # a row shared by several columns paraphrases them
            assert said[column.name] == column.doc, column.name
