"""`jobs.report`: the evaluation notebook for one night as one HTML file beside the lake, plots embedded, that
a rerun replaces; a failing cell fails the job in one line that names the cell."""

from __future__ import annotations

import logging
import os
import re

import pytest

from jobs import report
from tests.helpers import read_delta_rs
from tests.test_notebooks import PLOTS


def run_report(small_demo, *argv: str) -> None:
    report.cli(["--config", str(small_demo.root / "recllm.yaml"), "--log-level", "WARNING", *argv])


def test_the_report_embeds_the_nights_plots_and_numbers_beside_the_lake_and_a_rerun_replaces_it(small_demo):
    metrics = read_delta_rs(str(small_demo.root / "lake" / "metrics"))
    *_, earlier, last = sorted(metrics["ds"].unique())
    popularity = metrics.query("ds == @last and task == 'click' and metric == 'recall' and k == 10 "
                               "and model == 'popularity'")["value"].iloc[0]
    ctr = metrics.query("ds == @last and task == 'ctr' and metric == 'auc'")

    run_report(small_demo, "--ds", last)

    path = small_demo.root / "reports" / f"evaluation-{last}.html"  # reports/ beside lake/
    html = path.read_text(encoding="utf-8")
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) == PLOTS["evaluation.ipynb"]
    assert 'src="http' not in html and "def table(" not in html  # nothing fetched from the network; code hidden
    assert f"click recall@10 on {last}: " in html and f"popularity {popularity:.4f}" in html
    assert all(f"{row.model} {row.value:.4f}" in html for row in ctr.itertuples())

    run_report(small_demo, "--ds", earlier, "--out", str(path))  # another night into the same file

    html = path.read_text(encoding="utf-8")
    assert f"click recall@10 on {earlier}: " in html and last not in html  # every view ends on the night asked for
    assert os.listdir(path.parent) == [path.name]  # replaced, no copy or temporary file beside it


def test_a_failing_cell_fails_the_report_in_one_line_naming_the_cell(small_demo, caplog):
    caplog.set_level(logging.ERROR, logger="recllm.jobs")

    with pytest.raises(SystemExit) as exit_:
        run_report(small_demo, "--ds", "2025-12-31")  # a night with no metrics

    assert exit_.value.code == 1
    [reason] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "\n" not in reason and reason.startswith("report failed: evaluation.ipynb: cell 2 (under 'recllm: evaluation') ")
    assert "ValueError: no metrics for 2025-12-31" in reason
    assert not (small_demo.root / "reports" / "evaluation-2025-12-31.html").exists()
