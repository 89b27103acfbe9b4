"""Render the evaluation notebook for one night as a self-contained HTML report beside the lake.

    python -m jobs.report --ds 2026-01-04 --config jobs/conf/default.yaml [--out PATH]

The report (plots as embedded PNGs, the code hidden) goes to reports/evaluation-<ds>.html in the folder
that holds the lake (config `lake.root`), so last night's health opens in a browser without Jupyter.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from jobs.common import existing_file, parser, run
from recllm.config import load_config

log = logging.getLogger("recllm.jobs.report")


def main(args: argparse.Namespace) -> None:
    from recllm.evaluation.report import render_report

    lake_root = os.path.abspath(load_config(args.config).lake.root)
    if not os.path.isdir(lake_root):
        raise LookupError(f"no lake at {lake_root} (config lake.root): nothing to report")
    start = time.perf_counter()
    path = render_report(lake_root, args.ds, args.out, args.notebook)
    log.info("report ds=%s: %s (%.0f KiB) from %s in %.1fs", args.ds, path, path.stat().st_size / 1024,
             os.path.basename(args.notebook), time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments, built without starting a kernel (`tests/test_cli.py` checks every one has help)."""
    from recllm.evaluation.report import EVALUATION_NOTEBOOK

    p = parser(__doc__.splitlines()[0], job="report")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="the HTML file to write, replaced if there (default: reports/evaluation-<ds>.html "
                   "in the folder that holds lake.root)")
    p.add_argument("--notebook", default=str(EVALUATION_NOTEBOOK), type=existing_file, metavar="PATH",
                   help="the notebook to render, run with RECLLM_LAKE and RECLLM_DS set to the lake and --ds "
                   "(default: the repository's notebooks/evaluation.ipynb)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("report", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
