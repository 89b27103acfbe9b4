"""Entry points as a scheduler runs them: arguments, config, exit codes, the demo end to end."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from jobs import ingest, land
from recllm.data.formats import FORMATS


@pytest.fixture
def config_file(tmp_path, spark):
    path = tmp_path / "recllm.yaml"
    path.write_text(f"lake:\n  root: {tmp_path / 'lake'}\n  backend: deltars\n")
    return str(path)


def test_the_demo_runs_the_nightly_pipeline_end_to_end_and_shows_a_sample(small_demo):
    root, out = small_demo.root, small_demo.printed
    assert "== nightly ds=2026-01-04" in out
    assert "train     " in out and "skipped: not enough history yet" in out
    assert "model urm-2026-01-03" in out and "model urm-2026-01-04" in out and "cold retrain due" in out
    assert "candidates=" in out and "metric rows" in out
    assert "Today's click candidates for" in out and "A cold-start fill" in out
    from tests.helpers import read_delta_rs

    metrics = set(read_delta_rs(str(root / "lake" / "metrics"))["model"])
    assert {"popularity", "als", "gbt_ctr", "sasrec"} <= metrics and any(m.startswith("urm-") for m in metrics)


def test_land_then_ingest_from_the_command_line_and_rerun_safely(config_file, spark, caplog):
    land.cli(["--config", config_file, "--days", "1", "--users", "20", "--items", "30", "--ds", "2026-03-01"])
    with caplog.at_level(logging.INFO):
        ingest.cli(["--ds", "2026-03-01", "--config", config_file, "--run-id", "r1"])
        ingest.cli(["--ds", "2026-03-01", "--config", config_file, "--run-id", "r2"])
    lines = [r.getMessage() for r in caplog.records if "events_raw: in=" in r.getMessage()]
    assert len(lines) == 2 and lines[0].split("events_raw")[1] == lines[1].split("events_raw")[1]


def test_land_loads_a_recbole_folder_through_the_format_registry(config_file, tmp_path):
    from tests.helpers import read_delta_rs

    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n2\t20\t3\t881250950\n"
    )
    land.cli(["--config", config_file, "--source", "recbole", "--path", str(folder), "--ds", "2026-03-02"])
    events = read_delta_rs(str(tmp_path / "lake" / "events_raw"))
    assert sorted(events["event_id"]) == ["rb-r0", "rb-r1"] and set(events["ds"]) == {"2026-03-02"}
    assert sorted(read_delta_rs(str(tmp_path / "lake" / "items_raw"))["item_id"]) == ["i10", "i20"]
    assert sorted(read_delta_rs(str(tmp_path / "lake" / "users_raw"))["user_id"]) == ["u1", "u2"]


@pytest.mark.parametrize("source", FORMATS)
def test_a_dataset_source_without_a_path_fails_with_exit_2_saying_what_it_needs(source, capsys):
    with pytest.raises(SystemExit) as exit_:
        land.cli(["--source", source])
    assert exit_.value.code == 2
    assert f"--source {source} needs --path to a" in capsys.readouterr().err


_REFUSE = """
import sys
from pyspark import SparkContext
import jobs.{job} as job
try:
    job.cli({argv!r})
except SystemExit as e:
    print("exit", e.code, "torch" in sys.modules, SparkContext._active_spark_context is not None)
"""


@pytest.mark.parametrize("job, argv, says", [
    ("benchmark", ["--data", "/no/such/folder", "--format", "movielens"], "--data: no such folder: '/no/such/folder'"),
    ("land", ["--source", "recbole", "--path", "/no/such/folder"], "--path: no such folder"),
    ("ingest", ["--ds", "2026-13-45"], "ds must be a real calendar date as YYYY-MM-DD, got '2026-13-45'"),
    ("ingest", ["--ds", "2026-02-30"], "got '2026-02-30'"),
    ("ingest", ["--ds", "2026-03-01\n"], "got '2026-03-01\\n'"),
    ("nightly", ["--ds", "\uff12\uff10\uff12\uff16-03-01"], "ds must be a real calendar date"),
    ("ingest", ["--ds", "2026-03-01", "--log-level", "LOUD"], "--log-level: invalid choice: 'LOUD'"),
    ("train", ["--ds", "2026-03-01", "--config", "/no/such.yaml"], "--config: no such file: '/no/such.yaml'"),
])
def test_argument_and_path_errors_answer_in_one_line_before_spark_or_torch_load(job, argv, says):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _REFUSE.format(job=job, argv=argv)], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert done.stdout.split() == ["exit", "2", "False", "False"], done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr


def test_a_bad_date_is_refused_before_anything_runs(config_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        ingest.cli(["--ds", "03/01/2026", "--config", config_file])
    assert exit_.value.code == 2
    assert "ds must be a real calendar date as YYYY-MM-DD" in capsys.readouterr().err


def test_a_malformed_config_fails_with_exit_1_naming_the_key(tmp_path, caplog):
    path = tmp_path / "bad.yaml"
    path.write_text("lake:\n  rooot: /tmp/x\n")
    with pytest.raises(SystemExit) as exit_:
        ingest.cli(["--ds", "2026-03-01", "--config", str(path)])
    assert exit_.value.code == 1
    assert "lake.rooot" in caplog.text


def test_scoring_the_demo_through_the_item_index_writes_the_tables_exact_scoring_writes(small_demo, tmp_path):
    """The demo's last day scored again, at K=50, on a copy of its lake: exact, then with score.top_k_method ann."""
    import shutil

    import yaml

    from jobs import score
    from tests.helpers import read_delta_rs

    shutil.copytree(small_demo.root / "lake", tmp_path / "lake")
    settings = yaml.safe_load((small_demo.root / "recllm.yaml").read_text())
    settings["lake"]["root"] = str(tmp_path / "lake")
    written = {}
    for method in ("exact", "ann"):
        settings["score"] = {"work_root": str(tmp_path / "scoring"), "top_k": 50, "top_k_method": method}
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(settings))
        score.cli(["--config", str(path), "--ds", "2026-01-04"])
        written[method] = {t: read_delta_rs(str(tmp_path / "lake" / t)).query("ds == '2026-01-04'")
                           for t in ("candidates", "ctr_scores", "cold_start_fills")}

    exact, ann = written["exact"], written["ann"]
    for table in exact:
        assert list(ann[table].columns) == list(exact[table].columns) and len(ann[table]) == len(exact[table]) > 0
    keys = ["objective", "user_id"]
    exact_sets = exact["candidates"].groupby(keys)["item_id"].agg(set)
    ann_sets = ann["candidates"].groupby(keys)["item_id"].agg(set)
    assert exact_sets.index.equals(ann_sets.index)
    assert exact["candidates"]["rank"].max() > 10  # K=50 (the demo's 10) over its catalogue of about 50 items
    overlap = [len(a & e) / len(e) for a, e in zip(ann_sets, exact_sets)]
    assert np.mean(overlap) >= 0.95
    events = read_delta_rs(str(tmp_path / "lake" / "events"))
    bought = events[(events["event_type"] == "purchase") & (events["ds"] <= "2026-01-04")]
    bought_pairs = set(zip(bought["user_id"], bought["item_id"]))
    assert not bought_pairs & set(zip(ann["candidates"]["user_id"], ann["candidates"]["item_id"]))
