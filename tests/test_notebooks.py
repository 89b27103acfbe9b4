"""The analyst notebooks execute headless against the small demo's lake, and their plots render."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import read_delta_rs

pytestmark = pytest.mark.slow  # the notebooks read the small demo's lake

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, lake: Path) -> nbformat.NotebookNode:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    os.environ["RECLLM_LAKE"] = str(lake)
    try:
        NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS.parent)}}).execute()
    finally:
        os.environ.pop("RECLLM_LAKE", None)
    return book


def outputs(book, kind: str) -> list:
    return [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


@pytest.fixture(scope="module")
def executed(small_demo):
    root = small_demo.root
    return {name: execute(name, root / "lake") for name in ("evaluation.ipynb", "prompt_sensitivity.ipynb")}


@pytest.mark.parametrize("name, plots", [("evaluation.ipynb", 4), ("prompt_sensitivity.ipynb", 1)])
def test_the_notebook_runs_headless_and_renders_its_plots(executed, name, plots):
    book = executed[name]
    assert len(outputs(book, "image/png")) >= plots
    assert not [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def test_the_evaluation_notebook_shows_the_metrics_tables_values(small_demo, executed):
    root = small_demo.root
    metrics = read_delta_rs(str(root / "lake" / "metrics"))
    latest = metrics[(metrics["ds"] == metrics["ds"].max()) & (metrics["metric"] == "recall") & (metrics["k"] == 10)
                     & (metrics["task"] == "click") & (metrics["model"] == "popularity")]
    printed = "".join(o.get("text", "") for c in executed["evaluation.ipynb"].cells if c.cell_type == "code"
                      for o in c.get("outputs", []) if o.output_type == "stream")
    assert f"popularity {latest['value'].iloc[0]:.4f}" in printed
