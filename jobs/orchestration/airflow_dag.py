"""Airflow 3 DAG `recllm_nightly`: wait for the day's raw partitions, then one task per recllm job.

Run date. A run processes the day its data interval covers: the schedule is a daily
`CronDataIntervalTimetable` at 02:00 UTC, so the run triggered on day T at 02:00 covers
[T-1 02:00, T 02:00) and every task gets `--ds {{ data_interval_start | ds }}`, i.e. T - 1.
The Databricks bundle (`databricks.yml`) applies the same rule (`--day-before <trigger date>`).
A manual run or backfill of day D is the run whose data interval starts on D
(`airflow dags test recllm_nightly <D+1>T02:00:00+00:00`, or a backfill from D to D+1);
outside Airflow it is `python -m jobs.<step> --ds D`.

Tasks, in order: `landed` (a BashSensor poking `jobs.landed`: events_raw and items_raw have
partition ds; mode reschedule every 10 minutes for up to 8 hours, exit 3 = not yet, any other
failure fails at once), then `ingest`, `features`, `prompts`, `train` (`--when-due`: trains only
when the nightly policy says so), `score`, `evaluate`, `report`. Each is exactly the job's
entry point, `<recllm_python> -m jobs.<step> --ds <run date> [--config <recllm_config>]`, so a
task retried or cleared reruns that step safely (every job replaces its date's outputs). On a
night without enough history, train logs why and succeeds, score and evaluate log "no model yet:
skipped" and succeed, and report renders what there is.

Settings: an `execution_timeout` per task (EXECUTION_TIMEOUT), 2 retries with exponential backoff
from 5 minutes (at most 1 hour), train and score in the pool `recllm_gpu` (create it with one slot
per GPU host: `airflow pools set recllm_gpu 1 "recllm GPU steps"`), one active run at a time, and
`on_failure_callback` = FAILURE_CALLBACKS on every task: `log_failure` logs the task, the run date
and the error; to alert, append a notifier to that list (e.g. the SMTP or Slack provider's
`SmtpNotifier(...)` / `SlackNotifier(...)`) or a function of the task context.

Airflow Variables (all optional):
  recllm_python    the interpreter where recllm is installed (default: the `.venv/bin/python` of the
                   checkout that holds this file, which `make install` creates; set it when the DAG
                   file is copied into a dags folder elsewhere)
  recllm_config    the YAML config file (default: empty = no --config, the embedded default config)
  recllm_notebook  the notebook `jobs.report` renders (default: empty = the checkout's
                   notebooks/evaluation.ipynb; set it when recllm is installed from a wheel)

Airflow itself needs only `apache-airflow` and `apache-airflow-providers-standard`
(jobs/orchestration/requirements-airflow.txt), not recllm: the tasks run the project's interpreter.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shlex
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.bash import BashSensor
from airflow.sdk import DAG, CronDataIntervalTimetable

log = logging.getLogger("recllm.airflow")

STEPS = ("ingest", "features", "prompts", "train", "score", "evaluate", "report")  # report: the night's HTML, last
STEP_ARGS = {  # what a step takes besides the run date and the config
    "train": "--when-due",
    "report": "{% set n = var.value.get('recllm_notebook', '') %}{% if n %}--notebook {{ n | sh }}{% endif %}",
}
GPU_POOL = "recllm_gpu"
GPU_STEPS = ("train", "score")
EXECUTION_TIMEOUT = {
    "landed": dt.timedelta(minutes=5),  # one poke
    "ingest": dt.timedelta(hours=1),
    "features": dt.timedelta(hours=2),
    "prompts": dt.timedelta(hours=1),
    "train": dt.timedelta(hours=6),
    "score": dt.timedelta(hours=3),
    "evaluate": dt.timedelta(hours=3),
    "report": dt.timedelta(minutes=30),
}
LANDED_POKE_INTERVAL = dt.timedelta(minutes=10)
LANDED_TIMEOUT = dt.timedelta(hours=8)
LANDED_NOT_YET = 3  # jobs.landed's exit status while the partitions are missing

_CHECKOUT = Path(__file__).resolve().parents[2] if len(Path(__file__).resolve().parents) > 2 else Path.cwd()
DEFAULT_PYTHON = str(_CHECKOUT / ".venv" / "bin" / "python")  # the checkout's `make install` environment
RUN_DATE = "{{ data_interval_start | ds }}"  # the day the data interval covers: the day before the trigger
PYTHON = "{{ var.value.get('recllm_python', %s) | sh }}" % json.dumps(DEFAULT_PYTHON)
CONFIG = "{% set c = var.value.get('recllm_config', '') %}{% if c %}--config {{ c | sh }}{% endif %}"


def command(job: str, extra: str = "") -> str:
    """The task's bash command: job `job`'s entry point for the run date, with the config when one is set."""
    return " ".join(part for part in (PYTHON, "-m", f"jobs.{job}", "--ds", RUN_DATE, CONFIG, extra) if part)


def log_failure(context) -> None:
    """Failure hook: one line naming the task, the run date and the error (the alert hooks go beside it)."""
    ti = context["task_instance"]
    interval_start = context.get("data_interval_start")
    ds = interval_start.strftime("%Y-%m-%d") if interval_start else "?"
    log.error("recllm_nightly: %s failed for ds %s (try %s, run %s): %s", ti.task_id, ds, ti.try_number,
              context.get("run_id"), context.get("exception"))


FAILURE_CALLBACKS = [log_failure]  # append notifiers here to alert on every failed task

with DAG(
    dag_id="recllm_nightly",
    description="recllm nightly: landed -> ingest -> features -> prompts -> train -> score -> evaluate -> report",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    user_defined_filters={"sh": shlex.quote},
    default_args={
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(hours=1),
        "on_failure_callback": FAILURE_CALLBACKS,
    },
    tags=["recllm"],
) as dag:
    previous = BashSensor(
        task_id="landed",
        bash_command=command("landed"),
        retry_exit_code=LANDED_NOT_YET,
        mode="reschedule",
        poke_interval=LANDED_POKE_INTERVAL,
        timeout=LANDED_TIMEOUT,
        execution_timeout=EXECUTION_TIMEOUT["landed"],
    )
    for step in STEPS:
        task = BashOperator(
            task_id=step,
            bash_command=command(step, STEP_ARGS.get(step, "")),
            execution_timeout=EXECUTION_TIMEOUT[step],
            pool=GPU_POOL if step in GPU_STEPS else "default_pool",
        )
        previous >> task
        previous = task
