"""The schedulers: one run-date rule, the landed check, the Airflow 3 DAG loaded and run by real Airflow, the
Databricks bundle checked against the SDK's job settings and the built wheel."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from jobs.cli import JOBS

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = ROOT / "jobs" / "orchestration"
STEPS = next(ast.literal_eval(n.value) for n in ast.walk(ast.parse((ORCHESTRATION / "airflow_dag.py").read_text()))
             if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "STEPS")
RUN_DATE_TEMPLATE = "--ds {{ data_interval_start | ds }}"


# -- the run date ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, ds", [
    (["--day-before", "2026-01-05"], "2026-01-04"),
    (["--day-before", "2026-03-01"], "2026-02-28"),
    (["--day-before", "2024-03-01"], "2024-02-29"),
    (["--day-before", "2026-01-01"], "2025-12-31"),
    (["--ds", "", "--day-before", "2026-01-05"], "2026-01-04"),  # Databricks: the job parameter ds unset
    (["--ds", "2026-01-02", "--day-before", "2026-01-05"], "2026-01-02"),  # a backfill: ds wins
    (["--ds", "2026-01-02"], "2026-01-02"),
])
def test_the_run_date_is_ds_else_the_day_before_the_trigger_date(argv, ds):
    for job in ("ingest", "train", "report", "landed"):
        assert importlib.import_module(f"jobs.{job}").build_parser().parse_args(argv).ds == ds, job


@pytest.mark.parametrize("argv, says", [
    ([], "the run date is required: --ds YYYY-MM-DD or --day-before YYYY-MM-DD"),
    (["--ds", ""], "the run date is required"),
    (["--day-before", "2026-02-30"], "argument --day-before: ds must be a real calendar date as YYYY-MM-DD"),
    (["--day-before", ""], "argument --day-before: ds must be a real calendar date"),
    (["--ds", "2026-1-5", "--day-before", "2026-01-05"], "argument --ds: ds must be a real calendar date"),
])
def test_a_missing_or_bad_run_date_is_refused_with_exit_2(argv, says, capsys):
    from jobs import ingest

    with pytest.raises(SystemExit) as exit_:
        ingest.build_parser().parse_args(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_a_job_with_an_optional_run_date_takes_an_empty_ds_as_none():
    from jobs import land

    assert land.build_parser().parse_args(["--ds", ""]).ds is None
    assert land.build_parser().parse_args(["--day-before", "2026-01-05"]).ds == "2026-01-04"


# -- jobs.landed -----------------------------------------------------------------------------------------------

_LANDED = """
import sys
from pyspark import SparkContext
import jobs.landed as job
try:
    job.cli({argv!r})
    code = 0
except SystemExit as e:
    code = e.code
print("exit", code, "torch" in sys.modules, SparkContext._active_spark_context is not None)
"""


def _landed(argv):
    done = subprocess.run([sys.executable, "-c", _LANDED.format(argv=argv)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    return done.stdout.split(), done.stderr


def test_landed_exits_0_when_the_days_raw_partitions_are_there_and_3_while_not_without_spark(tmp_path, spark):
    from jobs import land

    config = tmp_path / "recllm.yaml"
    config.write_text(f"lake: {{root: {tmp_path / 'lake'}, backend: deltars}}\n")
    assert _landed(["--ds", "2026-03-01", "--config", str(config)])[0] == ["exit", "3", "False", "False"]  # no lake yet
    land.cli(["--config", str(config), "--days", "1", "--users", "20", "--items", "30", "--ds", "2026-03-01"])

    out, err = _landed(["--day-before", "2026-03-02", "--config", str(config)])
    assert out == ["exit", "0", "False", "False"] and "the partition is in events_raw, items_raw" in err
    out, err = _landed(["--ds", "2026-03-02", "--config", str(config)])
    assert out == ["exit", "3", "False", "False"] and "not yet: no partition in events_raw, items_raw" in err
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"lake: {{root: {tmp_path / 'lake'}, backend: native, catalog_prefix: main.recllm}}\n")
    out, err = _landed(["--ds", "2026-03-01", "--config", str(catalog)])
    assert out[:2] == ["exit", "1"] and "catalog_prefix" in err


# -- Airflow ---------------------------------------------------------------------------------------------------


def airflow_python() -> str:
    """The Airflow environment's interpreter: RECLLM_AIRFLOW_PYTHON (the Makefile sets it), else .venv-airflow."""
    path = os.environ.get("RECLLM_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow" / "bin" / "python")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no Airflow environment at {path}: `make airflow-venv` builds it (`make test` does)")
    return path


def run_airflow(tmp_path: Path, variables: dict[str, str], trigger: str | None, timeout: int = 300, retries=True):
    """Migrate a fresh sqlite metadata DB under tmp_path, then load the DAG folder (and dag.test the run
    triggered at `trigger`) with the Airflow interpreter; returns the script's result and its output."""
    python = airflow_python()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ORCHESTRATION),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **{f"AIRFLOW_VAR_{name.upper()}": value for name, value in variables.items()},
    })
    migrate = subprocess.run([str(Path(python).parent / "airflow"), "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    argv = [python, str(ROOT / "tests" / "airflow_dag_run.py")] + (["--test", trigger] if trigger else [])
    argv += [] if retries else ["--no-retries"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, output[-6000:]
    return json.loads(lines[-1][len("RESULT "):]), output


def test_the_airflow_dag_loads_runs_each_step_for_the_data_interval_and_fails_fast_calling_the_hook(tmp_path):
    """Real Airflow 3 loads the DAG; its settings; a broken set-up (the config file is missing) fails the sensor at
    once instead of poking for hours, the failure callback names the task and the run date."""
    result, output = run_airflow(tmp_path, {"recllm_python": sys.executable, "recllm_config": "/no/such.yaml"},
                                 trigger="2026-01-06T02:00:00+00:00")

    assert result["import_errors"] == {} and result["dag_ids"] == ["recllm_nightly"]
    assert result["timetable"] == "CronDataIntervalTimetable"
    # the run the scheduler triggers on 2026-01-05 02:00 covers 2026-01-04, the day before
    assert result["next_run"] == {"run_after": "2026-01-05T02:00:00+00:00",
                                  "data_interval_start": "2026-01-04T02:00:00+00:00",
                                  "data_interval_end": "2026-01-05T02:00:00+00:00"}
    tasks = result["tasks"]
    assert list(tasks) == ["landed", *STEPS] and all(step in JOBS for step in tasks)
    for previous, (task_id, task) in zip([None, *tasks], tasks.items()):
        assert task["upstream"] == ([previous] if previous else [])
        assert task["operator"].startswith("airflow.providers.standard.")
        assert f" -m jobs.{task_id} {RUN_DATE_TEMPLATE} " in task["bash_command"]
        assert "var.value.get('recllm_python'" in task["bash_command"] and "recllm_config" in task["bash_command"]
        assert task["execution_timeout_s"] and task["retries"] == 2 and task["retry_exponential_backoff"] > 1
        assert task["on_failure_callback"] == ["log_failure"]
        assert task["pool"] == ("recllm_gpu" if task_id in ("train", "score") else "default_pool")
    assert tasks["landed"]["operator"].endswith("BashSensor") and tasks["landed"]["mode"] == "reschedule"
    assert tasks["landed"]["retry_exit_code"] == 3 and tasks["landed"]["timeout_s"] >= 3600
    assert tasks["train"]["bash_command"].endswith(" --when-due")
    assert f'"{ROOT / ".venv" / "bin" / "python"}"' in tasks["ingest"]["bash_command"]  # the default interpreter

    run = result["run"]
    assert run["data_interval_start"] == "2026-01-05T02:00:00+00:00" and run["state"] == "failed"
    assert run["tasks"] == {"landed": "failed", **{step: "upstream_failed" for step in STEPS}}
    assert "--config: no such file: '/no/such.yaml'" in output
    assert "recllm_nightly: landed failed for ds 2026-01-05" in output


def test_airflow_runs_a_night_on_the_demo_lake_from_landed_to_report(small_demo, spark, tmp_path):
    """dag.test() for the run triggered on 2026-01-06 02:00 (its data interval covers 2026-01-05) on a copy of the
    demo lake with 2026-01-05 landed: every task succeeds and candidates has that night's rows."""
    from recllm.data.landing import land_day
    from recllm.data.synthetic import SyntheticConfig, generate
    from recllm.lake import Lake
    from tests.helpers import read_delta_rs

    root = tmp_path / "demo"
    shutil.copytree(small_demo.root, root)  # the lake, models, scoring and whatever else the demo keeps beside them
    settings = yaml.safe_load((small_demo.root / "recllm.yaml").read_text().replace(str(small_demo.root), str(root)))
    settings["nightly"] = {"retrain_every_days": 7}  # keep urm-2026-01-04: train --when-due logs why and succeeds
    config = root / "recllm.yaml"
    config.write_text(yaml.safe_dump(settings))
    # the demo's shop (tests/helpers.py DEMO_ARGS: 30 users, 40 items from 2026-01-01) one day further
    days, _ = generate(SyntheticConfig(n_users=30, n_items=40, n_days=5))
    assert days[-1].ds == "2026-01-05"
    land_day(Lake(spark, root=str(root / "lake"), backend="deltars"), days[-1])

    start = time.perf_counter()
    result, output = run_airflow(tmp_path, {"recllm_python": sys.executable, "recllm_config": str(config)},
                                 trigger="2026-01-06T02:00:00+00:00", timeout=1500, retries=False)
    seconds = time.perf_counter() - start

    assert result["import_errors"] == {}
    assert result["run"]["tasks"] == {task: "success" for task in ["landed", *STEPS]}, output[-8000:]
    assert result["run"]["state"] == "success"
    assert "nothing trained: reusing urm-2026-01-04" in output
    candidates = read_delta_rs(str(root / "lake" / "candidates"))
    assert len(candidates.query("ds == '2026-01-05'")) > 0
    assert (root / "reports" / "evaluation-2026-01-05.html").is_file()
    print(f"dag.test of one night: {seconds:.0f}s")


# -- Databricks ------------------------------------------------------------------------------------------------


def bundle_job() -> tuple[dict, dict]:
    """databricks.yml, and its nightly job with each `${var.name}` replaced by the variable's default."""
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    defaults = {name: v["default"] for name, v in bundle["variables"].items()}

    def resolve(x):
        if isinstance(x, dict):
            return {k: resolve(v) for k, v in x.items()}
        if isinstance(x, list):
            return [resolve(v) for v in x]
        if isinstance(x, str):
            whole = re.fullmatch(r"\$\{var\.(\w+)\}", x)
            return defaults[whole[1]] if whole else re.sub(r"\$\{var\.(\w+)\}", lambda m: str(defaults[m[1]]), x)
        return x

    (job,) = bundle["resources"]["jobs"].values()
    return bundle, resolve(job)


def test_the_bundles_job_round_trips_through_the_sdks_job_settings_without_loss():
    from databricks.sdk.service.jobs import JobSettings

    _, job = bundle_job()
    assert JobSettings.from_dict(job).as_dict() == job


def test_the_bundle_runs_each_step_on_its_cluster_with_the_run_date_rule_timeouts_retries_and_alerts(tmp_path):
    bundle, job = bundle_job()
    tasks = job["tasks"]
    assert [t["task_key"] for t in tasks] == ["landed", *STEPS]  # the Airflow DAG's steps, in its order
    assert all(t.get("depends_on", []) == ([{"task_key": p["task_key"]}] if p else [])
               for p, t in zip([None, *tasks], tasks))
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    gpu = clusters["gpu"]
    assert "gpu-ml" in gpu["spark_version"] and gpu["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
    assert gpu["spark_conf"]["spark.executor.resource.gpu.amount"] == "1"
    assert "gpu" not in clusters["cpu"]["spark_version"]
    on = {t["task_key"]: t["job_cluster_key"] for t in tasks}
    assert {on[s] for s in ("landed", "ingest", "features", "prompts")} == {"cpu"} and on["train"] == on["score"] == "gpu"

    assert job["timeout_seconds"] > 0 and job["email_notifications"]["on_failure"]
    assert job["health"]["rules"] == [{"metric": "RUN_DURATION_SECONDS", "op": "GREATER_THAN", "value": 14400}]
    assert job["schedule"]["timezone_id"] == "UTC" and job["max_concurrent_runs"] == 1
    assert {p["name"]: p["default"] for p in job["parameters"]}["ds"] == ""
    assert bundle["artifacts"]["recllm"]["type"] == "whl" and "dist" in bundle["artifacts"]["recllm"]["build"]

    config = tmp_path / "recllm.yaml"
    config.write_text("lake: {root: lake}\n")
    for task in tasks:
        assert task["timeout_seconds"] > 0 and task["max_retries"] >= 1 and task["min_retry_interval_millis"] > 0
        assert task["libraries"] == [{"whl": "./dist/*.whl"}]
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == "recllm" and wheel_task["entry_point"] == "recllm"
        job_name, *argv = wheel_task["parameters"]
        assert job_name == task["task_key"] and job_name in JOBS
        # the parameters as the job parses them: a scheduled run (ds unset) and a backfill (ds set)
        for ds, expected in (("", "2026-01-04"), ("2025-12-30", "2025-12-30")):
            filled = [a.replace("{{job.parameters.ds}}", ds).replace("{{job.trigger.time.iso_date}}", "2026-01-05")
                      .replace("{{job.parameters.config}}", str(config)).replace("${workspace.file_path}", str(ROOT))
                      for a in argv]
            args = importlib.import_module(f"jobs.{job_name}").build_parser().parse_args(filled)
            assert args.ds == expected and args.config == str(config), task["task_key"]
    assert "--when-due" in tasks[STEPS.index("train") + 1]["python_wheel_task"]["parameters"]
    report = tasks[-1]["python_wheel_task"]["parameters"]
    assert report[report.index("--notebook") + 1] == "${workspace.file_path}/notebooks/evaluation.ipynb"
    assert "notebooks/*.ipynb" in bundle["sync"]["include"]


def test_every_bundle_tasks_entry_point_is_in_the_built_wheel(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "--wheel-dir", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("recllm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = z.read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\s*\nrecllm = jobs\.cli:main$", scripts, re.M), scripts
    assert {"jobs/cli.py", "jobs/common.py", "jobs/conf/default.yaml"} <= names
    _, job = bundle_job()
    for task in job["tasks"]:
        assert f"jobs/{task['python_wheel_task']['parameters'][0]}.py" in names, task["task_key"]
    assert not any(n.startswith("notebooks/") for n in names)  # hence the report task's --notebook
