"""On a real Spark standalone cluster (a master and two workers on localhost, each its own
JVM with its own executors), the nightly pipeline writes the same tables as in local mode,
and scoring survives a worker dying mid-job."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from recllm.lake import Lake
from tests.cluster import StandaloneCluster
from tests.helpers import DEMO_ARGS, small_demo_config

RESULT_TABLES = ("events", "items", "users", "quarantine", "item_features", "prompts", "models",
                 "candidates", "ctr_scores", "cold_start_fills", "metrics")
VOLATILE = {"quarantine": ["run_id", "quarantined_at"],
            "models": ["created_at", "path", "config_json", "metrics_json"]}
"""Columns that name when or where a run happened rather than what it computed."""

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with StandaloneCluster(tmp_path_factory.mktemp("cluster"), workers=2, cores=1) as running:
        yield running


def run_job(module: str, config: str, *args: str, timeout: float = 900) -> subprocess.Popen:
    """Start `python -m jobs.<module>` as a scheduler would: its own driver process."""
    return subprocess.Popen([sys.executable, "-m", f"jobs.{module}", "--config", config, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


@pytest.fixture(scope="module")
def cluster_demo(cluster, tmp_path_factory):
    """The small demo again, driven against the cluster, TorchDistributor on executors."""
    root = tmp_path_factory.mktemp("cluster-demo")
    config = small_demo_config(root, spark_section(cluster), local_mode=False)
    start = time.perf_counter()
    out = finish(run_job("demo", config, *DEMO_ARGS))
    return root, config, out, time.perf_counter() - start


def spark_section(cluster: StandaloneCluster) -> str:
    return f'spark: {{master: "{cluster.master_url}", shuffle_partitions: 2}}'


def comparable(spark, root, table: str):
    frame = Lake(spark, root=str(root / "lake"), backend="deltars").read(table)
    return frame.drop(*VOLATILE.get(table, []))


def test_the_nightly_pipeline_on_the_cluster_writes_the_tables_of_a_local_run(spark, small_demo, cluster_demo):
    root, _, out, seconds = cluster_demo
    assert "Started distributed training with 2 executor processes" in out
    print(f"\nsmall demo wall time: local[2] {small_demo.seconds:.0f} s, standalone cluster {seconds:.0f} s")
    for table in RESULT_TABLES:
        local, on_cluster = comparable(spark, small_demo.root, table), comparable(spark, root, table)
        assert on_cluster.count() == local.count() > 0 or table == "quarantine", table
        assert_approx_df_equality(on_cluster, local, precision=1e-5, ignore_row_order=True, ignore_nullable=True)


def test_scoring_completes_without_duplicates_when_a_worker_dies_mid_job(spark, cluster, cluster_demo, tmp_path):
    root, config, _, _ = cluster_demo
    ds = "2026-01-04"
    before = comparable(spark, root, "candidates").where(F.col("ds") == ds)
    expected = before.count()
    proc = run_job("score", config, "--ds", ds)
    killed: list[int] = []

    def kill_the_first_worker_that_runs_the_model():
        # Spark may place every scoring task on one executor, so watch both workers.
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            for i in range(len(cluster.workers)):
                if cluster.executor_running_torch(i):
                    cluster.kill_worker(i)
                    killed.append(i)
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_the_first_worker_that_runs_the_model)
    watcher.start()
    out = finish(proc)
    watcher.join()
    for i in killed:
        cluster.start_worker(i)
    cluster.wait_for_workers()
    assert killed, "no worker ran a scoring task while the job ran"
    after = comparable(spark, root, "candidates").where(F.col("ds") == ds)
    assert after.count() == expected
    assert after.dropDuplicates(["objective", "user_id", "rank"]).count() == expected
    assert_approx_df_equality(after, before, precision=1e-5, ignore_row_order=True, ignore_nullable=True)
    assert "candidates=" in out



def test_training_killed_on_an_executor_resumes_from_its_checkpoint_when_spark_retries(cluster, cluster_demo, tmp_path):
    root = cluster_demo[0]
    shutil.copytree(root / "lake", tmp_path / "lake")
    config = small_demo_config(tmp_path, spark_section(cluster), local_mode=False, epochs=30, patience=30,
                               checkpoint_every_steps=5)
    proc = run_job("train", config, "--ds", "2026-01-04")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob("models/*/checkpoints/latest")):
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before its first checkpoint"
    assert any(cluster.kill_children_of(i, "torch.distributed.run") for i in range(len(cluster.workers))), \
        "no training rank ran on an executor"
    out = finish(proc)
    assert "Started distributed training with 2 executor processes" in out
    assert "resumed from the checkpoint at step" in out
