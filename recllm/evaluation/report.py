"""The analyst notebooks run headless: find the lake they read, execute one in a fresh kernel, save the
notebooks with their outputs (`make notebooks`), and render the evaluation notebook for one night as a
self-contained HTML report (`jobs.report`).

Only the standard library loads at import: the notebooks import `find_lake` from here, and nbclient and
nbconvert load when a notebook is executed or exported.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"  # the repository's notebooks/ folder
EVALUATION_NOTEBOOK = NOTEBOOKS / "evaluation.ipynb"
REFRESHED_NOTEBOOKS = ("evaluation.ipynb", "prompt_sensitivity.ipynb")  # `make notebooks` reruns these
LAKE_ENV = "RECLLM_LAKE"  # the lake folder a notebook reads (default: found by `find_lake`)
DS_ENV = "RECLLM_DS"  # the night the evaluation notebook shows (default: the newest day in metrics)
CELL_TIMEOUT_S = 900

# The lab template without its scripts from a CDN (require.js, MathJax, Mermaid), which a report of
# tables and PNG plots does not need: the file opens complete without a network.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


class NotebookCellError(ValueError):
    """A notebook's cell raised or timed out; the one-line message names the notebook, the cell and the error."""


def find_lake(start: str | os.PathLike = ".", environ: Mapping[str, str] | None = None) -> str:
    """The lake folder a notebook reads: $RECLLM_LAKE when set, else the nearest `lake` folder holding Delta
    tables at or above `start` (so a notebook started in notebooks/ finds the repository's ../lake), as a path
    relative to the working directory. FileNotFoundError says what to set."""
    environ = os.environ if environ is None else environ
    if environ.get(LAKE_ENV):
        lake = environ[LAKE_ENV]
        if not os.path.isdir(lake):
            raise FileNotFoundError(f"{LAKE_ENV}={lake!r} is not a folder")
        return lake
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "lake"
        if candidate.is_dir() and any((table / "_delta_log").is_dir() for table in candidate.iterdir()):
            return os.path.relpath(candidate.resolve())  # through a link: Spark lists a table by its real path
    raise FileNotFoundError(f"no lake/ folder of Delta tables in {here} or above it: set {LAKE_ENV} to the lake "
                            "folder, or run `make demo` in the repository first")


def kernel_environment(lake: str | None = None, ds: str | None = None) -> dict[str, str]:
    """This process's environment for a notebook's kernel, with RECLLM_LAKE and RECLLM_DS set to `lake` and
    `ds`, or left out (the notebook's defaults) where None."""
    env = {k: v for k, v in os.environ.items() if k not in (LAKE_ENV, DS_ENV)}
    env.update({name: value for name, value in ((LAKE_ENV, lake), (DS_ENV, ds)) if value is not None})
    return env


def execute_notebook(path: str | os.PathLike, *, cwd: str | os.PathLike | None = None,
                     env: Mapping[str, str] | None = None, timeout: int = CELL_TIMEOUT_S) -> NotebookNode:
    """Notebook `path` with every cell run in a fresh kernel whose working directory is `cwd` (default: the
    notebook's folder, as in Jupyter) and whose environment is `env` (default: `kernel_environment()`).
    NotebookCellError names the cell that failed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellControlSignal, DeadKernelError

    path = Path(path)
    book = nbformat.read(path, as_version=4)
    running = {}

    def started(cell, cell_index, **_):
        running["index"] = cell_index

    client = NotebookClient(book, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(cwd or path.parent)}}, on_cell_start=started)
    try:
        client.execute(env=dict(kernel_environment() if env is None else env))
    except (CellControlSignal, DeadKernelError) as e:  # CellExecutionError, CellTimeoutError; a crashed kernel
        if "index" not in running:
            raise
        raise NotebookCellError(f"{path.name}: {describe_cell(book, running['index'])} failed: "
                                f"{_one_line(e)}") from None
    return book


def describe_cell(book: NotebookNode, index: int) -> str:
    """A cell as a reader finds it: its number among all cells and the heading of the section it sits in."""
    headings = [c.source.lstrip("#").strip().splitlines()[0] for c in book.cells[:index]
                if c.cell_type == "markdown" and c.source.startswith("#")]
    return f"cell {index + 1}" + (f" (under '{headings[-1]}')" if headings else "")


def _one_line(error: Exception) -> str:
    """The error's name and message on one line: a cell's error gives its exception, not the traceback."""
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(error).__name__}: {error}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def code_digest(book: NotebookNode) -> str:
    """A hash of the notebook's code cells: `refresh_notebook` stores it, so a test can tell a notebook whose
    code changed after its outputs were saved."""
    code = "\0".join(c.source for c in book.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def refresh_notebook(path: str | os.PathLike) -> Path:
    """Rerun notebook `path` in place from its own folder on the lake it finds there (RECLLM_LAKE and
    RECLLM_DS unset), and save it with its outputs, less stderr, and the digest of the code that made them."""
    import nbformat

    path = Path(path)
    book = execute_notebook(path, env=kernel_environment())
    for cell in book.cells:  # Spark's start-up lines and library warnings: noise that changes with every run
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    book.metadata["recllm"] = {"code_sha256": code_digest(book), "refreshed_by": "make notebooks"}
    _replace(path, nbformat.writes(book) + "\n")
    return path


def report_path(lake_root: str, ds: str) -> Path:
    """Where the nightly report for `ds` goes by default: reports/evaluation-<ds>.html beside the lake folder."""
    lake = Path(os.path.abspath(lake_root))
    return lake.parent / "reports" / f"evaluation-{ds}.html"


def render_report(lake_root: str, ds: str, out: str | os.PathLike | None = None,
                  notebook: str | os.PathLike = EVALUATION_NOTEBOOK) -> Path:
    """The evaluation notebook run for night `ds` on the lake at `lake_root`, written as one HTML file (code
    hidden, plots embedded as PNG data URIs, no scripts from the network) to `out` (default: `report_path`).
    A rerun replaces the file whole."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    book = execute_notebook(notebook, env=kernel_environment(lake=os.path.abspath(lake_root), ds=ds))
    exporter = HTMLExporter(template_name="lab", template_file="recllm_report.html.j2",
                            extra_loaders=[DictLoader({"recllm_report.html.j2": _OFFLINE_TEMPLATE})],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(book, resources={"metadata": {"name": f"recllm evaluation {ds}"}})
    out = Path(out) if out is not None else report_path(lake_root, ds)
    _replace(out, html)
    return out


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
