"""The lake survives faults: a job killed mid-write, and two jobs writing one table at once.

Every writer is a separate Python process with its own local Spark session running
`WRITER_SCRIPT` (real Spark, real delta-rs); the test process kills or races them for real
and then checks the table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recllm.lake import Lake
from tests.helpers import candidates_of, read_delta_rs

pytestmark = pytest.mark.slow  # each test starts writer processes, each its own Spark

REPO = Path(__file__).resolve().parents[1]
TABLE = "candidates"
DAY, OTHER_DAY, SECOND_DAY = "2026-01-01", "2026-01-02", "2026-01-03"

WRITER_SCRIPT = """
import json, os, sys, time

from recllm.config import load_config
from recllm.lake import Lake
from recllm.session import build_spark
from tests.helpers import CommittingTogether, candidates_of

spec = json.loads(sys.argv[1])
spark = build_spark(load_config(overrides={"spark": {
    "master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g", "app_name": "recllm-fault-writer",
    # a short-lived JVM starts about twice as fast without the optimising compiler
    "conf": {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}}}))
if spec["warm_up"]:
    # a job has run before it writes: its first, much slower, write goes to a scratch lake
    warm_up = Lake(spark, root=os.path.join(spec["work"], "warm-up-lake"), backend="deltars")
    ds, label = spec["writes"][0]
    warm_up.overwrite_partition("candidates", candidates_of(spark, ds, label, spec["rows"], spec["files"]), ds)
while not os.path.exists(os.path.join(spec["work"], "table-ready")):
    time.sleep(0.01)
lake = Lake(spark, root=spec["root"], backend="deltars")
if spec["commit_together"]:
    spark.dataSource.register(CommittingTogether)
for round_, (ds, label) in enumerate(spec["writes"]):
    day = candidates_of(spark, ds, label, spec["rows"], spec["files"])
    open(os.path.join(spec["work"], f"started-{spec['name']}-{round_}"), "w").close()
    try:
        lake.overwrite_partition("candidates", day, ds)
        outcome = "ok"
    except Exception as error:
        outcome = f"{type(error).__name__}: {str(error)[:1500]}"
    with open(os.path.join(spec["work"], "outcomes.jsonl"), "a") as out:
        out.write(json.dumps({"writer": spec["name"], "round": round_, "ds": ds, "outcome": outcome}) + "\\n")
"""


def start_writer(work: Path, name: str, root: str, writes: list[tuple[str, str]], rows: int, files: int = 1,
                 commit_with: int = 0, warm_up: bool = False) -> subprocess.Popen:
    """A writer process, in its own session so that the whole job (JVM included) can be killed.

    Once `work/table-ready` exists it overwrites each `(ds, label)` of `writes` in turn (after
    one write to a scratch lake if `warm_up`), marks `work/started-NAME-ROUND` as each write
    begins and appends each outcome to `work/outcomes.jsonl`. With `commit_with` > 1, the
    writers sharing `work` commit together (`CommittingTogether`). Starting a JVM takes long,
    so tests start their writers first and build the table meanwhile.
    """
    script = work / "writer.py"
    script.write_text(WRITER_SCRIPT)
    (work / "commit_barrier").mkdir(exist_ok=True)
    spec = {"root": root, "name": name, "writes": writes, "rows": rows, "files": files, "work": str(work),
            "commit_together": commit_with > 1, "warm_up": warm_up}
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECLLM_WRITER_NAME": name,
           "RECLLM_COMMIT_BARRIER": str(work / "commit_barrier"), "RECLLM_COMMIT_WRITERS": str(commit_with)}
    with open(work / f"writer-{name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, str(script), json.dumps(spec)], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def writer_logs(work: Path) -> str:
    """The end of every writer's output, for failure messages."""
    return "\n".join(log.read_text()[-2000:] for log in sorted(work.glob("writer-*.log")))


def outcomes(work: Path) -> list[dict]:
    path = work / "outcomes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def processes_of_session(session_id: int) -> list[int]:
    """Live processes of session `session_id`: a writer, its JVM and their Python workers."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _parent, _group, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == session_id and state != "Z":
            pids.append(int(entry))
    return pids


def kill_job(writer: subprocess.Popen) -> None:
    """SIGKILL every process of the writer's job at once, as when its container or node dies."""
    while pids := processes_of_session(writer.pid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    writer.wait(timeout=30)


def files_under(folder: str) -> set[str]:
    """Every file of a table folder outside its Delta log, relative to the folder."""
    return {
        os.path.relpath(os.path.join(d, f), folder)
        for d, _, names in os.walk(folder)
        if "_delta_log" not in d
        for f in names
    }


def same_rows(actual: DataFrame, expected: DataFrame) -> None:
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)


# -- a job killed during a partition overwrite ----------------------------------------------

KILLED_ROWS, KILLED_FILES, OTHER_ROWS = 4000, 8, 500


def write_table_before_the_killed_write(spark, root: str) -> None:
    """Candidates holding `OTHER_DAY` (version 0) and an old `DAY` in several files (version 1)."""
    lake = Lake(spark, root=root, backend="deltars")
    lake.overwrite_partition(TABLE, candidates_of(spark, OTHER_DAY, "other", OTHER_ROWS), OTHER_DAY)
    lake.overwrite_partition(TABLE, candidates_of(spark, DAY, "old", KILLED_ROWS, KILLED_FILES), DAY)


class KilledWrite:
    """A job overwriting `DAY` with "new" rows in its own copy of the table, to be killed at `moment`.

    `moment` is seconds after the write began, or one of "first data file" (its tasks are
    writing), "every data file" (all files begun: tasks finishing or the commit about to run)
    and "log entry" (its commit has put something in the Delta log).
    """

    def __init__(self, work: Path, moment: str | float):
        self.work, self.moment = work, moment
        self.root = str(work / "lake")
        self.table = os.path.join(self.root, TABLE)
        self.day_dir, self.log_dir = os.path.join(self.table, f"ds={DAY}"), os.path.join(self.table, "_delta_log")
        self.writer = start_writer(work, "killed", self.root, [(DAY, "new")], KILLED_ROWS, KILLED_FILES, warm_up=True)
        self.started_at: float | None = None
        self.seen_at_kill = ""

    def give_table(self, table_before: str) -> None:
        """Copy the table to write into, and let the writer go on to write it."""
        shutil.copytree(table_before, self.root)
        self.day_before, self.log_before = set(os.listdir(self.day_dir)), set(os.listdir(self.log_dir))
        (self.work / "table-ready").touch()

    def due(self) -> bool:
        """Whether the write has begun and reached `moment`."""
        if self.started_at is None:
            if not (self.work / "started-killed-0").exists():
                return False
            self.started_at = time.monotonic()
        if self.moment in ("first data file", "every data file"):
            new_files = len(set(os.listdir(self.day_dir)) - self.day_before)
            return new_files >= (1 if self.moment == "first data file" else KILLED_FILES)
        if self.moment == "log entry":
            return set(os.listdir(self.log_dir)) != self.log_before
        return time.monotonic() - self.started_at >= self.moment

    def kill(self) -> None:
        new_files = len(set(os.listdir(self.day_dir)) - self.day_before)
        new_log = sorted(set(os.listdir(self.log_dir)) - self.log_before)
        kill_job(self.writer)
        self.seen_at_kill = f"{new_files} new data file(s) and log entries {new_log} then"


KILL_MOMENTS = {
    "as its first data file appears": "first data file",
    "once all its data files exist": "every data file",
    "as its commit puts an entry in the log": "log entry",
    "0.5 s into the write": 0.5,
    "1.5 s into the write": 1.5,
}


def kill_each_at_its_moment(writes: dict[str, KilledWrite]) -> None:
    """Kill each writer as it reaches its moment (or once it has exited, should it finish first)."""
    pending, deadline = dict(writes), time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        for moment, write in list(pending.items()):
            if write.writer.poll() is not None or write.due():
                write.kill()
                del pending[moment]
        writing = any(write.started_at is not None for write in pending.values())
        time.sleep(0.001 if writing else 0.02)
    assert not pending, f"never reached {list(pending)}: {[writer_logs(w.work) for w in pending.values()]}"
    never_began = {m: writer_logs(w.work) for m, w in writes.items() if w.started_at is None}
    assert not never_began, f"writers died before their write began: {never_began}"


def test_a_job_killed_at_any_moment_of_a_partition_overwrite_leaves_the_old_or_the_new_table(spark, tmp_path):
    """Old version or new, never between: no stray file is read, every version reads, a rerun lands once."""
    writes = {}
    try:
        for i, (moment, when) in enumerate(KILL_MOMENTS.items()):
            (tmp_path / str(i)).mkdir()
            writes[moment] = KilledWrite(tmp_path / str(i), when)
        table_before = str(tmp_path / "before" / "lake")
        write_table_before_the_killed_write(spark, table_before)
        for write in writes.values():
            write.give_table(table_before)
        kill_each_at_its_moment(writes)
    finally:
        for write in writes.values():
            kill_job(write.writer)

    other = candidates_of(spark, OTHER_DAY, "other", OTHER_ROWS)
    old = other.union(candidates_of(spark, DAY, "old", KILLED_ROWS))
    new_day = candidates_of(spark, DAY, "new", KILLED_ROWS, KILLED_FILES)
    new = other.union(new_day)
    rows_at_version = {0: OTHER_ROWS, 1: OTHER_ROWS + KILLED_ROWS, 2: OTHER_ROWS + KILLED_ROWS}
    for moment, write in writes.items():
        killed = f"killed {moment} ({write.seen_at_kill})"
        lake = Lake(spark, root=write.root, backend="deltars")
        version = lake.version(TABLE)
        assert version in (1, 2), f"{killed}: version {version}"
        same_rows(lake.read(TABLE), old if version == 1 else new)
        for v in range(version + 1):
            assert len(read_delta_rs(write.table, version=v)) == rows_at_version[v], f"{killed}: version {v}"
        for path in lake.files(TABLE):
            pq.read_metadata(path)  # every file the log names is a whole Parquet file

        lake.overwrite_partition(TABLE, new_day, DAY)
        same_rows(lake.read(TABLE), new)
        assert lake.version(TABLE) == version + 1, killed

        lake.vacuum(TABLE, retention_hours=0)
        referenced = {os.path.relpath(p, write.table) for p in lake.files(TABLE)}
        assert files_under(write.table) == referenced, f"{killed}: vacuum leaves only the files the table uses"


# -- two jobs writing one table at once ------------------------------------------------------

RACE_ROWS, DIFFERENT_DAY_ROUNDS = 50, 3


@pytest.fixture(scope="module")
def raced_table(spark, tmp_path_factory):
    """Two jobs whose commits meet, round after round: first each on its own day, then both on `DAY`.

    Returns (lake, version before the race, {writer: [(ds, label) per round]}, outcomes, work folder).
    """
    work = tmp_path_factory.mktemp("race")
    lake = Lake(spark, root=str(work / "lake"), backend="deltars")
    plans = {
        name: [(day, f"{name} round {r}") for r in range(DIFFERENT_DAY_ROUNDS)] + [(DAY, f"{name} on the same day")]
        for name, day in (("first", DAY), ("second", SECOND_DAY))
    }
    writers = [start_writer(work, name, lake.root, writes, RACE_ROWS, commit_with=2) for name, writes in plans.items()]
    try:
        lake.overwrite_partition(TABLE, candidates_of(spark, OTHER_DAY, "other", RACE_ROWS), OTHER_DAY)
        for day in (DAY, SECOND_DAY):
            lake.overwrite_partition(TABLE, candidates_of(spark, day, f"{day} before", RACE_ROWS), day)
        first_version = lake.version(TABLE)
        (work / "table-ready").touch()
        for writer in writers:
            assert writer.wait(timeout=600) == 0, writer_logs(work)
    finally:
        for writer in writers:
            kill_job(writer)
    return lake, first_version, plans, outcomes(work), work


def test_two_jobs_overwriting_different_days_at_the_same_instant_both_land(spark, raced_table):
    """Each round both commits land whole, and no version loses or mixes a day."""
    lake, first_version, plans, results, work = raced_table
    met = sorted(os.listdir(work / "commit_barrier"))
    assert met == sorted(f"{name}-{r}" for name in plans for r in range(len(plans[name]))), f"commits met: {met}"
    race = [o for o in results if o["round"] < DIFFERENT_DAY_ROUNDS]
    failed = [o for o in race if o["outcome"] != "ok"]
    assert len(race) == 2 * DIFFERENT_DAY_ROUNDS and not failed, f"{len(failed)} of {len(race)} writes failed: {failed}"

    last_version = first_version + 2 * DIFFERENT_DAY_ROUNDS
    same_rows(
        lake.read(TABLE, version=last_version),
        candidates_of(spark, OTHER_DAY, "other", RACE_ROWS)
        .union(candidates_of(spark, DAY, plans["first"][DIFFERENT_DAY_ROUNDS - 1][1], RACE_ROWS))
        .union(candidates_of(spark, SECOND_DAY, plans["second"][DIFFERENT_DAY_ROUNDS - 1][1], RACE_ROWS)),
    )
    for version in range(first_version, last_version + 1):
        contents = read_delta_rs(lake.location(TABLE), version=version)
        per_day = contents.groupby("ds")["model_version"].agg(["size", "nunique"])
        assert list(per_day.index) == [DAY, OTHER_DAY, SECOND_DAY], f"version {version} lost a day"
        assert (per_day["size"] == RACE_ROWS).all() and (per_day["nunique"] == 1).all(), (
            f"version {version} holds a day that is not exactly one write: {per_day.to_dict()}"
        )


def test_two_jobs_overwriting_the_same_day_at_the_same_instant_leave_exactly_one_of_them(spark, raced_table):
    """Same-day writes are serialised: both commit, the later replaces the earlier, nothing mixes."""
    lake, first_version, plans, results, _ = raced_table
    same_day = [o for o in results if o["round"] == DIFFERENT_DAY_ROUNDS]
    assert [o["outcome"] for o in same_day] == ["ok", "ok"], same_day
    assert lake.version(TABLE) == first_version + 2 * DIFFERENT_DAY_ROUNDS + 2

    table = lake.location(TABLE)
    labels_of_day = [
        set(contents[contents["ds"] == DAY]["model_version"])
        for contents in (read_delta_rs(table, version=lake.version(TABLE) - 1), read_delta_rs(table))
    ]
    assert sorted(label for labels in labels_of_day for label in labels) == sorted(
        plans[name][-1][1] for name in plans
    ), f"the earlier commit holds {labels_of_day[0]}, the later {labels_of_day[1]}: one write each"
    same_rows(lake.read(TABLE, ds=DAY), candidates_of(spark, DAY, labels_of_day[1].pop(), RACE_ROWS))
    same_rows(
        lake.read(TABLE).where(F.col("ds") != DAY),
        candidates_of(spark, OTHER_DAY, "other", RACE_ROWS)
        .union(candidates_of(spark, SECOND_DAY, plans["second"][DIFFERENT_DAY_ROUNDS - 1][1], RACE_ROWS)),
    )
