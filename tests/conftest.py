"""Shared fixtures: one real local Spark session for the run, a fresh lake per test."""

from __future__ import annotations

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


SMALL_MODEL = """
model: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 600}
train: {epochs: 2, batch_size: 64, num_processes: 1, model_root: %s}
score: {work_root: %s, top_k: 10}
"""


@pytest.fixture(scope="session")
def small_demo(spark, tmp_path_factory):
    """The demo at a small size, run once: (its folder with lake/, its printed output)."""
    import contextlib
    import io

    from jobs import demo

    root = tmp_path_factory.mktemp("demo")
    config = root / "recllm.yaml"
    config.write_text(f"lake:\n  root: {root / 'lake'}\n  backend: deltars\n" + SMALL_MODEL % (root / "models", root / "scoring"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        demo.cli(["--config", str(config), "--days", "4", "--users", "30", "--items", "40", "--log-level", "WARNING"])
    return root, printed.getvalue()


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
