"""The analyst notebooks find the lake from any working directory, run headless from a `notebooks/` folder beside
the small demo's lake with every plot rendered, and the copies committed carry the outputs of such a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from recllm.evaluation.report import (NOTEBOOKS, REFRESHED_NOTEBOOKS, code_digest, execute_notebook, find_lake,
                                      kernel_environment)
from tests.helpers import read_delta_rs

PLOTS = {"evaluation.ipynb": 6, "prompt_sensitivity.ipynb": 1}  # figures each notebook draws, whatever the data


def code_cells(book) -> list:
    return [c for c in book.cells if c.cell_type == "code"]


def images_per_cell(book) -> list[int]:
    return [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in code_cells(book)]


def printed(book) -> str:
    return "".join(o.text for c in code_cells(book) for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def a_lake(folder: Path) -> Path:
    """A folder `lake` holding a Delta table's log, as `make demo` leaves it."""
    (folder / "lake" / "metrics" / "_delta_log").mkdir(parents=True)
    return folder / "lake"


# -- finding the lake ----------------------------------------------------------------------------------------


def test_a_notebook_started_below_the_repository_finds_its_lake_and_passes_a_lake_folder_without_tables(tmp_path):
    lake = a_lake(tmp_path / "repo")
    started_in = tmp_path / "repo" / "notebooks" / "drafts"
    (started_in / "lake").mkdir(parents=True)  # a folder named lake without Delta tables, like the recllm.lake package

    found = find_lake(started_in, environ={})

    assert Path(found).resolve() == lake.resolve() and not Path(found).is_absolute()


def test_RECLLM_LAKE_names_the_lake_wherever_the_notebook_starts(tmp_path):
    elsewhere = a_lake(tmp_path / "elsewhere")
    a_lake(tmp_path / "repo")

    assert find_lake(tmp_path / "repo", environ={"RECLLM_LAKE": str(elsewhere)}) == str(elsewhere)
    with pytest.raises(FileNotFoundError, match="RECLLM_LAKE='.*missing' is not a folder"):
        find_lake(tmp_path / "repo", environ={"RECLLM_LAKE": str(tmp_path / "missing")})


def test_with_no_lake_above_the_working_directory_the_error_says_what_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="no lake/ folder of Delta tables in .* set RECLLM_LAKE"):
        find_lake(tmp_path, environ={})


# -- the notebooks, run headless -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def executed(small_demo) -> dict:
    """Both notebooks run as a reader runs them: copied into `notebooks/` beside the small demo's `lake/` and run
    there, with neither RECLLM_LAKE nor RECLLM_DS set, so each finds ../lake and shows its newest night."""
    folder = small_demo.root / "notebooks"
    folder.mkdir(exist_ok=True)
    books = {}
    for name in REFRESHED_NOTEBOOKS:
        shutil.copy(NOTEBOOKS / name, folder / name)
        books[name] = execute_notebook(folder / name, env=kernel_environment())
    return books


@pytest.mark.parametrize("name", REFRESHED_NOTEBOOKS)
def test_the_notebook_runs_from_notebooks_on_the_lake_beside_it_and_draws_every_plot(executed, name):
    book = executed[name]

    assert sum(images_per_cell(book)) == PLOTS[name]
    assert not [o for c in code_cells(book) for o in c.outputs if o.output_type == "error"]
    assert printed(book).startswith("lake ../lake, ")


def test_the_evaluation_notebook_prints_the_nights_numbers_from_the_tables(small_demo, executed):
    lake = small_demo.root / "lake"
    metrics = read_delta_rs(str(lake / "metrics"))
    night = metrics[metrics["ds"] == metrics["ds"].max()]
    popularity = night.query("task == 'click' and metric == 'recall' and k == 10 and model == 'popularity'")["value"]
    gbt_auc = night.query("task == 'ctr' and metric == 'auc' and model == 'gbt_ctr'")["value"]
    quarantine = read_delta_rs(str(lake / "quarantine"))
    rejected = (quarantine["ds"] == night["ds"].iloc[0]).sum()

    text = printed(executed["evaluation.ipynb"])

    assert f"click recall@10 on {night['ds'].iloc[0]}: " in text and f"popularity {popularity.iloc[0]:.4f}" in text
    assert f"gbt_ctr {gbt_auc.iloc[0]:.4f}" in text
    assert f"quarantine on {night['ds'].iloc[0]}: {rejected} rows rejected" in text


@pytest.mark.parametrize("name", REFRESHED_NOTEBOOKS)
def test_the_committed_notebook_carries_the_outputs_of_a_fresh_run_of_its_code(executed, name):
    """`make notebooks` saves a digest of the code it ran: code edited since, or a notebook saved half-run,
    fails here until the outputs are made again."""
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    fresh = executed[name]
    cells = code_cells(committed)

    assert committed.metadata.get("recllm", {}).get("code_sha256") == code_digest(committed), "run `make notebooks`"
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), "run `make notebooks`"
    assert [c.source for c in cells] == [c.source for c in code_cells(fresh)]
    assert images_per_cell(committed) == images_per_cell(fresh)
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
