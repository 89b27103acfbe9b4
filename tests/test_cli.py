"""The `recllm` console script and every job's arguments: each says what it is, usage names `recllm <job>`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from jobs.cli import JOBS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parser(job: str):
    return importlib.import_module(f"jobs.{job}").build_parser()


@pytest.mark.parametrize("job", JOBS)
def test_every_argument_of_every_job_has_help_and_usage_reads_recllm_job(job):
    p = _parser(job)

    assert p.format_usage().startswith(f"usage: recllm {job} ")
    unexplained = [a.option_strings or a.dest for a in p._actions if not (a.help or "").strip()]
    assert not unexplained, f"recllm {job}: arguments without help: {unexplained}"
    assert f"recllm {job}" in p.format_help()  # every help text renders (a stray % would raise)


def test_building_every_parser_starts_no_spark_and_loads_no_torch():
    script = ("import sys, importlib\nfrom pyspark import SparkContext\nfrom jobs.cli import JOBS\n"
              "for job in JOBS:\n    importlib.import_module(f'jobs.{job}').build_parser().format_help()\n"
              "print(SparkContext._active_spark_context is None, 'torch' not in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.stdout.split() == ["True", "True"], done.stdout + done.stderr


def test_help_lists_every_job_with_its_one_line_description(capsys):
    main(["--help"])  # returns: exit status 0

    out = capsys.readouterr().out
    assert out.startswith("usage: recllm <job>")
    for job in JOBS:
        description = importlib.import_module(f"jobs.{job}").__doc__.splitlines()[0]
        assert f"  {job} " in out and description in out, job


@pytest.mark.parametrize("argv, says", [([], ""), (["lnad", "--ds", "2026-01-01"], "recllm: unknown job 'lnad'\n")])
def test_no_job_or_an_unknown_one_lists_the_jobs_and_exits_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(says + "usage: recllm <job>") and all(f"  {job} " in err for job in JOBS)


def test_a_jobs_help_names_the_console_script_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["land", "--help"])

    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recllm land ") and "parquet" in out and "csv" in out
