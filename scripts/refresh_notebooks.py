"""Rerun the analyst notebooks on the demo's lake and save them with their outputs (`make notebooks`).

    .venv/bin/python scripts/refresh_notebooks.py [NAME.ipynb ...]

Each notebook in notebooks/ (default: all of `recllm.evaluation.report.REFRESHED_NOTEBOOKS`) runs in a
fresh kernel with notebooks/ as its working directory, so it reads the repository's lake/ (`make demo`
first) and the newest night there; RECLLM_LAKE and RECLLM_DS are ignored. tests/test_notebooks.py checks
that the saved outputs are current.
"""

from __future__ import annotations

import argparse
import sys
import time

from recllm.evaluation.report import NOTEBOOKS, REFRESHED_NOTEBOOKS, NotebookCellError, refresh_notebook


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=list(REFRESHED_NOTEBOOKS),
                   help=f"notebooks in notebooks/ to rerun (default: {' '.join(REFRESHED_NOTEBOOKS)})")
    args = p.parse_args(argv)
    for name in args.names:
        start = time.perf_counter()
        try:
            path = refresh_notebook(NOTEBOOKS / name)
        except (NotebookCellError, FileNotFoundError) as e:
            print(f"refresh_notebooks: {e}", file=sys.stderr)
            return 1
        print(f"{path.relative_to(NOTEBOOKS.parent)}: saved with outputs in {time.perf_counter() - start:.1f}s "
              f"({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
