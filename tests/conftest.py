"""Shared fixtures: one real local Spark session for the run, a fresh lake per test."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from recllm.config import load_config
from recllm.lake import Lake
from recllm.session import build_spark


@pytest.fixture(scope="session")
def spark():
    config = load_config(overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2, "app_name": "recllm-tests"}})
    session = build_spark(config)
    yield session
    session.stop()


DEMO_ARGS = ["--days", "4", "--users", "30", "--items", "40"]


def small_demo_config(root, spark_section: str = "", **train) -> str:
    """The demo's config at a small size, its lake and models under `root`; returns its path.

    Two training ranks with one torch thread each, so a local and a cluster run compute
    the same floats; `train` overrides keys of the `train:` section.
    """
    import json

    train = {"epochs": 2, "batch_size": 64, "num_processes": 2, "torch_threads": 1, "local_mode": True,
             "model_root": str(root / "models"), **train}
    path = root / "recllm.yaml"
    path.write_text(f"""
lake: {{root: {root / 'lake'}, backend: deltars}}
{spark_section}
model: {{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 600}}
train: {json.dumps(train)}
score: {{work_root: {root / 'scoring'}, top_k: 10}}
""")
    return str(path)


@dataclass
class DemoRun:
    root: Path      # holds lake/, models/, scoring/
    printed: str    # what the demo printed
    seconds: float  # its wall time


@pytest.fixture(scope="session")
def small_demo(spark, tmp_path_factory) -> DemoRun:
    """The demo at a small size on the local session, run once."""
    import contextlib
    import io

    from jobs import demo

    root = tmp_path_factory.mktemp("demo")
    config = small_demo_config(root)
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        demo.cli(["--config", config, *DEMO_ARGS, "--log-level", "WARNING"])
    return DemoRun(root, printed.getvalue(), time.perf_counter() - start)


@pytest.fixture
def lake(spark, tmp_path) -> Lake:
    return Lake(spark, root=str(tmp_path / "lake"), backend="deltars")


def read_delta_rs(path: str, version: int | None = None):
    """Read a Delta table with delta-rs alone (no Spark), as pandas, via QueryBuilder."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(path, version=version)
    result = pa.table(QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all())
    return result.cast(pa.schema([_without_views(f) for f in result.schema])).to_pandas()


def _without_views(field):
    """DataFusion answers with string_view; pandas conversion needs plain strings."""
    import pyarrow as pa

    t = field.type
    if pa.types.is_string_view(t):
        t = pa.string()
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        t = pa.list_(_without_views(t.value_field))
    return field.with_type(t)
