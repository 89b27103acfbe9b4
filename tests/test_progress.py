"""Progress of long loops: periodic log lines off a terminal (rate, ETA, a final line), a bar on one; worker lines reach stderr."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import pytest

from recllm.progress import progress, progress_line

LOG = logging.getLogger("recllm.test_progress")


class Clock:
    """A clock that moves only when told: each read returns the current time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG.name]


def test_off_a_terminal_it_logs_rate_and_eta_at_most_once_per_interval_then_a_final_line(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    clock = Clock()
    seen = []
    for item in progress(range(10), desc="scoring", unit="batch", log=LOG, every_s=2.0, stream=io.StringIO(),
                         clock=clock):
        seen.append(item)
        clock.now += 1.0  # one second per item: a line every second item
    assert seen == list(range(10))
    assert lines(caplog) == [
        "scoring: 2/10 batch (20%), 1.0 batch/s, ETA 8.0s",
        "scoring: 4/10 batch (40%), 1.0 batch/s, ETA 6.0s",
        "scoring: 6/10 batch (60%), 1.0 batch/s, ETA 4.0s",
        "scoring: 8/10 batch (80%), 1.0 batch/s, ETA 2.0s",
        "scoring: 10/10 batch (100%), 1.0 batch/s, ETA 0.0s",
        "scoring: 10/10 batch (100%) in 10.0s, 1.0 batch/s",
    ]


def test_a_fast_loop_logs_only_its_final_line(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    clock = Clock()
    for _ in progress(range(1000), desc="epoch 0", unit="batch", log=LOG, every_s=30.0, stream=io.StringIO(),
                      clock=clock):
        clock.now += 0.01
    assert lines(caplog) == ["epoch 0: 1000/1000 batch (100%) in 10.0s, 100.0 batch/s"]


def test_a_loop_left_early_still_logs_how_far_it_got(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    clock = Clock()
    for item in progress(iter(range(100)), total=100, desc="epoch 1", unit="batch", log=LOG, stream=io.StringIO(),
                         clock=clock):
        clock.now += 0.5
        if item == 3:
            break
    assert lines(caplog) == ["epoch 1: 3/100 batch (3%) in 2.0s, 1.5 batch/s"]


def test_without_a_total_the_line_has_count_and_rate_but_no_eta():
    assert progress_line("embedding", 120, None, "text", 60.0) == "embedding: 120 text, 2.0 text/s"
    assert progress_line("epoch 2", 30, 4000, "batch", 60.0).endswith("ETA 2h12m")


def test_on_a_terminal_the_items_pass_through_unchanged_under_a_bar(caplog):
    caplog.set_level(logging.INFO, logger=LOG.name)
    items = [{"a": 1}, None, "x", 3.5]
    terminal = Terminal()
    assert list(progress(items, desc="scoring", unit="batch", log=LOG, stream=terminal)) == items
    assert "scoring" in terminal.getvalue() and "4/4" in terminal.getvalue()
    assert lines(caplog) == []


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_an_empty_loop_yields_nothing(stream):
    assert list(progress([], desc="nothing", log=LOG, stream=stream)) == []


def test_a_process_without_logging_set_up_gets_recllms_info_lines_on_stderr_and_no_one_elses():
    # what a Spark Python worker is: a fresh interpreter whose INFO lines would otherwise be dropped
    script = (
        "import logging; from recllm.progress import log_recllm_info_to_stderr, progress\n"
        "log_recllm_info_to_stderr()\n"
        "list(progress(range(3), desc='scoring', unit='batch', log=logging.getLogger('recllm.scoring.batch')))\n"
        "logging.getLogger('transformers').info('a library line')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "INFO recllm.scoring.batch: scoring: 3/3 batch (100%)" in done.stderr
    assert "a library line" not in done.stderr
