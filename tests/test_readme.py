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
