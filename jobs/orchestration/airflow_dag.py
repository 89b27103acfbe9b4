"""Airflow DAG for the nightly run: one task per recllm job, each called with the run date.

Copy into the Airflow dags folder on a host where recllm is installed (`pip install .`)
and RECLLM_CONFIG names the YAML config. Each task is exactly the job's entry point
(`python -m jobs.<name> --ds {{ ds }} --config ...`), so a task retried or cleared for a
date reruns that step safely (every job replaces its date's outputs).
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

STEPS = ("ingest", "features", "prompts", "train", "score", "evaluate", "report")  # report: the night's HTML, last

with DAG(
    dag_id="recllm_nightly",
    schedule="0 2 * * *",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    tags=["recllm"],
) as dag:
    previous = None
    for step in STEPS:
        task = BashOperator(
            task_id=step,
            bash_command=f"python -m jobs.{step} --ds {{{{ ds }}}} --config ${{RECLLM_CONFIG}}",
        )
        if previous is not None:
            previous >> task
        previous = task
