"""Benchmark the lake against plain Spark Parquet, and ingest throughput, on one machine.

    .venv/bin/python scripts/bench_lake.py [--rows 2000000] [--repeats 3] [--ingest-users 20000]

Everything runs in one local Spark session (local[2]) against a temporary folder:

1. A `candidates` frame of `--rows` rows (one `ds`) is generated in Spark, cached and
   counted, so generation is never timed.
2. Write: `lake.overwrite_partition("candidates", df, ds)` (delta-rs backend) vs
   `df.write.mode("overwrite").partitionBy("ds").parquet(...)`.
3. Read: a full scan of each that decodes every column
   (`sum(hash(all columns)), sum(score), count(*)`), collected to the driver.
   Both answers are compared, so a fast-but-wrong reader would show.
4. Ingest: one synthetic day (recllm.data.synthetic) is landed into the raw tables, then
   `recllm.pipeline.ingest.run_ingest` is timed on it (reruns of a ds are idempotent).

Each measure is repeated `--repeats` times, alternating which side goes first, and the
medians are compared. Progress goes to stderr, the results to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recllm.config import IngestConfig, load_config
from recllm.lake import Lake
from recllm.session import build_spark
from schemas import CANDIDATES

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def timed(label: str, fn):
    """Run fn(), logging start and end; returns (seconds, result)."""
    log(f"{label}: start")
    t = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t
    log(f"{label}: done in {dt:.2f}s")
    return dt, result


# -- data -------------------------------------------------------------------------------

OBJECTIVES = ("click", "purchase", "search")
K = 50  # candidates per (user, objective)


def make_candidates(spark: SparkSession, n: int, ds: str) -> DataFrame:
    """n rows shaped like a day of `candidates`: K ranked items per (user, objective)."""
    idx = F.col("id")
    group = F.floor(idx / K)  # one (user, objective) set per K consecutive rows
    objective = F.element_at(
        F.array(*[F.lit(o) for o in OBJECTIVES]), (group % len(OBJECTIVES) + 1).cast("int")
    )
    user = F.concat(F.lit("u"), F.lpad(F.floor(group / len(OBJECTIVES)).cast("string"), 7, "0"))
    item = F.concat(F.lit("i"), F.lpad(F.pmod(F.xxhash64(idx), F.lit(200_000)).cast("string"), 6, "0"))
    df = spark.range(0, n, 1, numPartitions=spark.sparkContext.defaultParallelism).select(
        F.lit(ds).alias("ds"),
        objective.alias("objective"),
        user.alias("user_id"),
        (idx % K + 1).cast("int").alias("rank"),
        item.alias("item_id"),
        (F.lit(100.0) - (idx % K).cast("double") - F.rand(seed=7)).alias("score"),
        F.lit("bench-model-v1").alias("model_version"),
    )
    # Same columns, order and types as the contract (nullability aside).
    return df.select(*CANDIDATES.column_names)


def full_scan(df: DataFrame) -> tuple:
    """A collect that has to decode every column of every row."""
    row = df.agg(
        F.sum(F.hash(*[F.col(c) for c in CANDIDATES.column_names]).cast("long")).alias("h"),
        F.sum("score").alias("s"),
        F.count(F.lit(1)).alias("n"),
    ).collect()[0]
    return int(row["h"]), float(row["s"]), int(row["n"])


def same_answer(a: tuple, b: tuple) -> bool:
    """Exact hash and count; sum(score) up to float summation order."""
    return a[0] == b[0] and a[2] == b[2] and abs(a[1] - b[1]) <= 1e-9 * max(1.0, abs(b[1]))


def folder_stats(path: str) -> tuple[int, int]:
    """(parquet files, bytes) under a folder, Delta log excluded."""
    files, size = 0, 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != "_delta_log"]
        for f in filenames:
            if f.endswith(".parquet"):
                files += 1
                size += os.path.getsize(os.path.join(dirpath, f))
    return files, size


def delta_current_files(path: str) -> tuple[int, int]:
    """(files, bytes) of the Delta table's current version."""
    import pyarrow as pa
    from deltalake import DeltaTable

    actions = pa.table(DeltaTable(path).get_add_actions(flatten=True))
    return actions.num_rows, int(sum(actions.column("size_bytes").to_pylist()))


def num_partitions(df: DataFrame) -> int | str:
    try:
        return df.rdd.getNumPartitions()
    except Exception as e:  # pragma: no cover - informational only
        return f"? ({type(e).__name__})"


# -- measures ---------------------------------------------------------------------------


def bench_lake_vs_parquet(spark: SparkSession, lake: Lake, workdir: str, args) -> dict:
    ds = args.ds
    log(f"generating {args.rows:,} candidate rows in Spark (cached, not timed)")
    df = make_candidates(spark, args.rows, ds).cache()
    n = df.count()
    log(f"generated and cached {n:,} rows in {df.rdd.getNumPartitions()} partitions")
    parquet_path = os.path.join(workdir, "parquet", "candidates")

    def lake_write():
        return lake.overwrite_partition("candidates", df, ds)

    def parquet_write():
        df.write.mode("overwrite").partitionBy("ds").parquet(parquet_path)

    def lake_read():
        return full_scan(lake.read("candidates"))

    def read_parquet() -> DataFrame:
        # The contract's schema, as the lake reader uses: without it Spark infers ds as a date.
        return spark.read.schema(CANDIDATES.spark).parquet(parquet_path)

    def parquet_read():
        return full_scan(read_parquet())

    if args.warmup:
        # One full untimed round: JIT, Python workers and page cache are warm for both sides.
        timed("warm-up round (all four operations, full size, untimed)", lambda: (
            lake_write(), parquet_write(), lake_read(), parquet_read(),
        ))

    times = {("write", "lake"): [], ("write", "parquet"): [], ("read", "lake"): [], ("read", "parquet"): []}
    answers = {"lake": [], "parquet": []}
    for r in range(args.repeats):
        order = ("lake", "parquet") if r % 2 == 0 else ("parquet", "lake")
        log(f"repeat {r + 1}/{args.repeats}: order {' then '.join(order)}")
        for side in order:
            fn = lake_write if side == "lake" else parquet_write
            dt, _ = timed(f"  write {side}", fn)
            times[("write", side)].append(dt)
        for side in order:
            fn = lake_read if side == "lake" else parquet_read
            dt, answer = timed(f"  read {side}", fn)
            times[("read", side)].append(dt)
            answers[side].append(answer)

    lake_files, lake_bytes = delta_current_files(lake.location("candidates"))
    lake_all_files, lake_all_bytes = folder_stats(lake.location("candidates"))
    pq_files, pq_bytes = folder_stats(parquet_path)
    info = {
        "rows": n,
        "times": times,
        "answers_match": all(same_answer(a, answers["parquet"][0]) for a in answers["lake"] + answers["parquet"]),
        "answers": {k: v[0] for k, v in answers.items()},
        "lake_files": lake_files,
        "lake_bytes": lake_bytes,
        "lake_all_files": lake_all_files,
        "lake_all_bytes": lake_all_bytes,
        "lake_version": lake.version("candidates"),
        "pq_files": pq_files,
        "pq_bytes": pq_bytes,
        "lake_read_partitions": num_partitions(lake.read("candidates")),
        "pq_read_partitions": num_partitions(read_parquet()),
    }
    df.unpersist()
    return info


def bench_ingest(spark: SparkSession, workdir: str, args) -> dict:
    from recllm.data.landing import land_day
    from recllm.data.synthetic import SyntheticConfig, generate
    from recllm.pipeline.ingest import run_ingest

    ds = args.ds
    lake = Lake(spark, root=os.path.join(workdir, "ingest_lake"), backend="deltars")
    config = SyntheticConfig(n_users=args.ingest_users, n_items=args.ingest_items, n_days=1, start_ds=ds)
    gen_s, (days, _truth) = timed(
        f"synthetic.generate(n_users={config.n_users}, n_items={config.n_items}, n_days=1)",
        lambda: generate(config),
    )
    day = days[0]
    raw_rows = len(day.events_raw) + len(day.items_raw) + len(day.users_raw)
    log(f"raw rows: events={len(day.events_raw):,} items={len(day.items_raw):,} users={len(day.users_raw):,}")
    land_s, landed = timed("land_day (pandas -> Spark -> 3 raw lake tables)", lambda: land_day(lake, day))

    ingest_times, reports = [], []
    for r in range(args.repeats):
        dt, report = timed(f"run_ingest repeat {r + 1}/{args.repeats}", lambda: run_ingest(lake, ds, IngestConfig()))
        ingest_times.append(dt)
        reports.append(report)
    return {
        "raw_rows": raw_rows,
        "landed": landed,
        "gen_s": gen_s,
        "land_s": land_s,
        "times": ingest_times,
        "report": reports[-1],
        "reports_agree": all(
            {k: (c.rows_in, c.accepted, c.quarantined, c.reasons) for k, c in rep.tables.items()}
            == {k: (c.rows_in, c.accepted, c.quarantined, c.reasons) for k, c in reports[0].tables.items()}
            for rep in reports
        ),
        "events_rows": lake.read("events", ds=ds).count(),
        "events_version": lake.version("events"),
    }


# -- report -----------------------------------------------------------------------------


def fmt_rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "inf"


def fmt_times(ts: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in ts)


def print_report(args, lake_info: dict | None, ingest_info: dict | None, spark: SparkSession) -> None:
    import deltalake
    import pyspark

    out = []
    out.append("")
    out.append("## recllm lake benchmark")
    out.append("")
    out.append(
        f"machine: nproc={os.cpu_count()} | spark {spark.version} ({spark.sparkContext.master}, "
        f"shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}) | "
        f"pyspark {pyspark.__version__} | deltalake {deltalake.__version__} | "
        f"python {sys.version.split()[0]}"
    )
    out.append(f"rows={args.rows:,} repeats={args.repeats} (alternating order) ds={args.ds}")
    if lake_info:
        t = lake_info["times"]
        n = lake_info["rows"]
        out.append("")
        out.append("individual timings (s, in repeat order):")
        for (op, side), ts in t.items():
            out.append(f"  {op:5s} {side:7s}: {fmt_times(ts)}")
        out.append("")
        out.append(
            f"files: lake current version {lake_info['lake_files']} files / "
            f"{lake_info['lake_bytes'] / 1e6:.1f} MB (v{lake_info['lake_version']}; on disk incl. "
            f"superseded versions {lake_info['lake_all_files']} files / {lake_info['lake_all_bytes'] / 1e6:.1f} MB); "
            f"parquet {lake_info['pq_files']} files / {lake_info['pq_bytes'] / 1e6:.1f} MB"
        )
        out.append(
            f"read tasks: lake {lake_info['lake_read_partitions']}, parquet {lake_info['pq_read_partitions']}"
        )
        h, s, c = lake_info["answers"]["lake"]
        out.append(
            f"scan answers identical (lake vs parquet, every repeat): {lake_info['answers_match']} "
            f"(count={c:,}, sum(score)={s:,.2f}, sum(hash)={h})"
        )
    if ingest_info:
        out.append("")
        out.append(
            f"ingest: synthetic generate {ingest_info['gen_s']:.1f}s, land_day {ingest_info['land_s']:.1f}s "
            f"({fmt_rate(ingest_info['raw_rows'], ingest_info['land_s'])} rows/s), landed {ingest_info['landed']}"
        )
        out.append(f"ingest run_ingest timings (s): {fmt_times(ingest_info['times'])}")
        out.append(
            f"ingest reruns report identical counts: {ingest_info['reports_agree']}; events ds rows "
            f"after last rerun: {ingest_info['events_rows']:,} (events table v{ingest_info['events_version']})"
        )
        out.append("ingest report (last run):")
        for line in ingest_info["report"].lines():
            out.append(f"  {line}")

    out.append("")
    out.append("| measure | lake median s | parquet median s | ratio lake/parquet | lake rows/s | parquet rows/s |")
    out.append("|---|---:|---:|---:|---:|---:|")
    if lake_info:
        n = lake_info["rows"]
        for op in ("write", "read"):
            lm = statistics.median(lake_info["times"][(op, "lake")])
            pm = statistics.median(lake_info["times"][(op, "parquet")])
            label = f"{op} candidates ({n / 1e6:g}M rows)"
            out.append(
                f"| {label} | {lm:.2f} | {pm:.2f} | {lm / pm:.2f}x | {fmt_rate(n, lm)} | {fmt_rate(n, pm)} |"
            )
    if ingest_info:
        im = statistics.median(ingest_info["times"])
        out.append(
            f"| ingest run_ingest ({ingest_info['raw_rows']:,} raw rows in) | {im:.2f} | - | - | "
            f"{fmt_rate(ingest_info['raw_rows'], im)} | - |"
        )
    out.append("")
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000, help="candidate rows to write and read")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of every measure")
    p.add_argument("--ingest-users", type=int, default=20_000,
                   help="synthetic users for the ingest day (~16 raw events each); 0 skips ingest")
    p.add_argument("--ingest-items", type=int, default=5_000, help="synthetic catalogue size")
    p.add_argument("--ds", default="2026-01-01")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed full-size warm-up round")
    p.add_argument("--skip-lake", action="store_true", help="only run the ingest measure")
    p.add_argument("--workdir", default=None, help="where to write (default: a fresh temp dir, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_lake_")
    os.makedirs(workdir, exist_ok=True)
    log(f"work dir {workdir}; nproc={os.cpu_count()}")

    config = load_config(overrides={"spark": {
        "master": "local[2]", "shuffle_partitions": 2, "driver_memory": "6g", "app_name": "recllm-bench",
    }})
    _, spark = timed("start Spark", lambda: build_spark(config))
    lake = Lake(spark, root=os.path.join(workdir, "lake"), backend="deltars")
    try:
        lake_info = None if args.skip_lake else bench_lake_vs_parquet(spark, lake, workdir, args)
        ingest_info = bench_ingest(spark, workdir, args) if args.ingest_users > 0 else None
        print_report(args, lake_info, ingest_info, spark)
    finally:
        spark.stop()
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        log("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
