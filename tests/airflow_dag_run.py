"""Load the Airflow DAG with real Airflow and, optionally, run it once with `dag.test()`; prints one JSON line.

Run by tests/test_orchestration.py with the Airflow virtual environment's interpreter (`make airflow-venv`),
in an AIRFLOW_HOME whose metadata database `airflow db migrate` has made; AIRFLOW__CORE__DAGS_FOLDER names
jobs/orchestration. Not a test module: Airflow is not installed in the project's environment.

    python tests/airflow_dag_run.py [--test TRIGGER [--no-retries]]   # TRIGGER: the run's trigger time, e.g. 2026-01-06T02:00:00+00:00
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

DAG_ID = "recllm_nightly"


def describe(dag) -> dict:
    """The DAG's tasks with the settings the tests check, and the data interval of a scheduled run."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    tasks = {}
    for task_id in dag.topological_sort() if hasattr(dag, "topological_sort") else dag.task_ids:
        task = dag.get_task(getattr(task_id, "task_id", task_id))
        tasks[task.task_id] = {
            "operator": f"{type(task).__module__}.{type(task).__name__}",
            "upstream": sorted(task.upstream_task_ids),
            "bash_command": task.bash_command,
            "pool": task.pool,
            "execution_timeout_s": task.execution_timeout.total_seconds() if task.execution_timeout else None,
            "retries": task.retries,
            "retry_exponential_backoff": task.retry_exponential_backoff,
            "on_failure_callback": [getattr(f, "__name__", repr(f)) for f in (task.on_failure_callback or [])],
            "mode": getattr(task, "mode", None),
            "timeout_s": task.timeout if hasattr(task, "poke_interval") else None,
            "retry_exit_code": getattr(task, "retry_exit_code", None),
        }
    # the run the scheduler makes after the one for the interval [01-03 02:00, 01-04 02:00)
    utc = dt.timezone.utc
    last = DataInterval(dt.datetime(2026, 1, 3, 2, tzinfo=utc), dt.datetime(2026, 1, 4, 2, tzinfo=utc))
    info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=last, restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True))
    return {
        "timetable": type(dag.timetable).__name__,
        "tasks": tasks,
        "next_run": {"run_after": info.run_after.isoformat(), "data_interval_start": info.data_interval.start.isoformat(),
                     "data_interval_end": info.data_interval.end.isoformat()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--test", metavar="TRIGGER", help="dag.test() the run triggered at TRIGGER (ISO time with offset)")
    p.add_argument("--no-retries", action="store_true", help="run the test with every task's retries at 0")
    args = p.parse_args()

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    out: dict = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids)}
    dag = bag.get_dag(DAG_ID)
    if dag is not None:
        out.update(describe(dag))
    if args.test and dag is not None:
        from airflow.models.pool import Pool

        Pool.create_or_update_pool("recllm_gpu", slots=1, description="recllm GPU steps", include_deferred=False)
        if args.no_retries:  # a failing step fails the test now, not after retries minutes apart
            for task in dag.tasks:
                task.retries = 0
        run = dag.test(logical_date=dt.datetime.fromisoformat(args.test))
        out["run"] = {
            "state": str(run.state),
            "data_interval_start": run.data_interval_start.isoformat(),
            "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
        }
    print("RESULT " + json.dumps(out, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
