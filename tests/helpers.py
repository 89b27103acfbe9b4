"""Helpers that more than one test module uses: the small demo's config, a Spark-free Delta
reader, a tiny URM with its catalogue, and the candidates writer of the lake fault tests.

Fixtures live in `conftest.py`; this module holds plain functions and classes only, so test
modules (and the writer processes the fault tests start) import it and never each other.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import functions as F

from recllm.lake.delta_source import DeltaRsDataSource, DeltaRsWriter

# -- the small demo -------------------------------------------------------------------------------------------

DEMO_ARGS = ["--days", "4", "--users", "30", "--items", "40"]


def small_demo_config(root, spark_section: str = "", **train) -> str:
    """The demo's config at a small size, its lake and models under `root`; returns its path.

    Two training ranks with one torch thread each, so a local and a cluster run compute
    the same floats; `train` overrides keys of the `train:` section.
    """
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


# -- reading Delta without Spark ------------------------------------------------------------------------------


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


# -- a tiny URM ---------------------------------------------------------------------------------------------------

N_ITEMS, TEXT_DIM, IMAGE_DIM = 12, 8, 4


def tiny_model(tokenizer, n_items_trained=N_ITEMS - 2, seed=0, **overrides):
    """A one-layer Qwen2 URM over `tokenizer` (the `tokenizer` fixture) that knows `n_items_trained` IDs;
    `overrides`: other URMConfig fields."""
    import torch
    from transformers import AutoModel, Qwen2Config

    from recllm.model.urm import URM, URMConfig, control_token_ids

    torch.manual_seed(seed)
    backbone = AutoModel.from_config(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, max_position_embeddings=128, tie_word_embeddings=True))
    d = backbone.config.to_dict()
    d["model_type"] = "qwen2"
    shape = {"id_dim": 8, "out_dim": 16, "n_query_tokens": 3, "id_dropout": 0.0, "max_tokens": 48,
             "slot_attention": False, **overrides}
    config = URMConfig(backbone=d, n_items_trained=n_items_trained, text_dim=TEXT_DIM, image_dim=IMAGE_DIM,
                       pad_token_id=tokenizer.pad_token_id, **control_token_ids(tokenizer), **shape)
    return URM(config, backbone)


def tiny_catalog(seed=0):
    """`N_ITEMS` items with random text and image vectors; every third item has no image."""
    import torch

    from recllm.model.urm import ItemCatalog

    g = torch.Generator().manual_seed(seed)
    has_image = torch.tensor([i % 3 != 0 for i in range(N_ITEMS)])
    image = torch.randn(N_ITEMS, IMAGE_DIM, generator=g) * has_image.unsqueeze(1)
    return ItemCatalog(torch.randn(N_ITEMS, TEXT_DIM, generator=g), image, has_image,
                       [f"i{k}" for k in range(N_ITEMS)])


# -- the lake fault tests' writers ---------------------------------------------------------------------------
# The writer processes of tests/test_lake_faults.py import these: the data source class must
# be importable by name in every process that registers or runs it.


def candidates_of(spark, ds: str, label: str, rows: int, files: int = 1):
    """`rows` candidates of day `ds` in `files` files, each row tagged `label` (its model_version)."""
    from pyspark.sql import functions as F

    return spark.range(rows, numPartitions=files).select(
        F.lit(ds).alias("ds"),
        F.lit("click").alias("objective"),
        F.format_string("user-%05d", (F.col("id") / 10).cast("int")).alias("user_id"),
        (F.col("id") % 10 + 1).cast("int").alias("rank"),
        F.format_string("item-%d", F.col("id") % 97).alias("item_id"),
        (F.col("id") * 0.5).alias("score"),
        F.lit(label).alias("model_version"),
    )


def wait_for_every_writer() -> None:
    """A barrier across writer processes: the Nth call of each writer returns once all made theirs."""
    barrier, me = Path(os.environ["RECLLM_COMMIT_BARRIER"]), os.environ["RECLLM_WRITER_NAME"]
    writers = int(os.environ["RECLLM_COMMIT_WRITERS"])
    round_ = len(list(barrier.glob(f"{me}-*")))
    (barrier / f"{me}-{round_}").touch()
    deadline = time.monotonic() + 300
    while len(list(barrier.glob(f"*-{round_}"))) < writers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other writers never came to commit round {round_}")
        time.sleep(0.0005)



class CommittingTogether(DeltaRsDataSource):
    """The lake's own data source, with the commits of racing writers made to meet.

    Each writer, having read the table to commit against, waits before its first commit
    attempt until every racing writer has read it too, so all commit against the same version,
    as jobs on a slow object store routinely do. Unaided, Spark's scheduling puts 10-100 ms
    between two jobs' commits and a local commit takes a few, so they would rarely meet.
    """

    def writer(self, schema, overwrite: bool) -> DeltaRsWriter:
        return _WriterCommittingTogether(self.options, overwrite)


class _WriterCommittingTogether(DeltaRsWriter):
    def commit(self, messages) -> None:
        from deltalake import DeltaTable

        commit_now = DeltaTable.create_write_transaction
        waited = False

        def once_every_writer_has_read_the_table(table, *args, **kwargs):
            nonlocal waited
            if not waited:
                waited = True
                wait_for_every_writer()
            return commit_now(table, *args, **kwargs)

        DeltaTable.create_write_transaction = once_every_writer_has_read_the_table
        try:
            super().commit(messages)
        finally:
            DeltaTable.create_write_transaction = commit_now


def hashed_text_embedding(text):
    """A deterministic 32-dim unit vector per text in plain Spark SQL: these tests score, they do not
    need MiniLM's semantics (its UDF is tested with features and training), and skip its load."""
    raw = F.transform(F.sequence(F.lit(1), F.lit(32)), lambda i: F.sin(F.hash(text, i).cast("double")))
    norm = F.sqrt(F.aggregate(raw, F.lit(0.0), lambda acc, v: acc + v * v))
    return F.transform(raw, lambda v: (v / norm).cast("float"))
