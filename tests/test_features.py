"""Item features: stable indices, reused embeddings, counts, cold flags, idempotent reruns, the job's CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import features as features_job
from recllm.config import FeaturesConfig, IngestConfig
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.model.text_encoder import item_text
from recllm.pipeline.features import build_item_features, item_text_column, run_features
from recllm.pipeline.ingest import run_ingest
from schemas import ITEMS
from udfs.text import text_embedding_udf

CONFIG = FeaturesConfig(cold_min_events=20)
DAY1, DAY2 = "2026-01-01", "2026-01-02"


@dataclass
class History:
    """A lake featurised on day 1 and day 2 (then rerun): tables as of each day, versions of the last runs."""

    lake: Lake
    day1: pd.DataFrame
    day2: pd.DataFrame
    items1: pd.DataFrame
    items2: pd.DataFrame
    version_day2: int
    version_rerun: int


def by_item(df: DataFrame) -> pd.DataFrame:
    return df.toPandas().set_index("item_id").sort_index()


@pytest.fixture(scope="module")
def history(spark, tmp_path_factory) -> History:
    lake = Lake(spark, root=str(tmp_path_factory.mktemp("features") / "lake"), backend="deltars")
    days, _ = generate(SyntheticConfig(seed=3, n_users=30, n_items=40, n_days=2, impressions_per_user_day=6))
    embed = text_embedding_udf(CONFIG.text_encoder, CONFIG.batch_size)
    features, items = [], []
    for day in days:
        land_day(lake, day)
        run_ingest(lake, day.ds, IngestConfig())
        run_features(lake, day.ds, CONFIG, embed)
        features.append(by_item(lake.read("item_features")))
        items.append(by_item(lake.read("items")))
    version_day2 = lake.version("item_features")
    run_features(lake, DAY2, CONFIG, embed)
    return History(lake, *features, *items, version_day2, lake.version("item_features"))


def test_every_catalogue_item_gets_one_index_counting_from_zero(history):
    for ds, table, items in ((DAY1, history.day1, history.items1), (DAY2, history.day2, history.items2)):
        assert list(table.index) == list(items.index)
        assert sorted(table["item_index"]) == list(range(len(table)))
        assert set(table["ds"]) == {ds}


def test_known_items_keep_their_index_and_new_items_follow_in_catalogue_order(history):
    day1, day2 = history.day1, history.day2
    known = day2.loc[day1.index]
    assert (known["item_index"] == day1["item_index"]).all()
    assert set(known["first_seen_ds"]) == {DAY1}

    new = day2.drop(day1.index)
    assert len(new) > 0 and set(new["first_seen_ds"]) == {DAY2}
    by_index = new.sort_values("item_index")
    catalogue_order = history.items2.loc[new.index].reset_index().sort_values(["created_ts", "item_id"])
    assert list(by_index["item_index"]) == list(range(len(day1), len(day2)))
    assert list(by_index.index) == list(catalogue_order["item_id"])


def test_a_rerun_for_the_same_day_writes_an_identical_table(history):
    lake = history.lake
    assert history.version_rerun == history.version_day2 + 1
    assert_df_equality(
        lake.read("item_features", version=history.version_rerun),
        lake.read("item_features", version=history.version_day2),
        ignore_row_order=True,
        ignore_nullable=True,
        ignore_metadata=True,
    )


def test_counts_match_the_accepted_events_up_to_the_run_date(history):
    events = history.lake.read("events").toPandas()
    events["positive"] = events["event_type"].isin(["click", "purchase", "like"]) | (
        (events["event_type"] == "rating") & (events["value"] >= 4)
    )
    for ds, table in ((DAY1, history.day1), (DAY2, history.day2)):
        upto = events[events["ds"] <= ds].groupby("item_id")
        expected = pd.DataFrame({"n_events": upto.size(), "n_positive": upto["positive"].sum()})
        expected = expected.reindex(table.index, fill_value=0).astype("int64")
        pd.testing.assert_frame_equal(table[["n_events", "n_positive"]], expected, check_names=False)
    assert history.day2["n_positive"].sum() > 0


def test_cold_flags_follow_the_configured_threshold(history):
    for table in (history.day1, history.day2):
        assert (table["is_cold"] == (table["n_events"] < CONFIG.cold_min_events)).all()
    assert set(history.day2["is_cold"]) == {True, False}


def test_text_embeddings_are_unit_vectors_closer_within_a_category(history):
    table = history.day2.join(history.items2[["category"]])
    vectors = np.stack(table["text_embedding"].to_numpy())
    assert vectors.shape == (len(table), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    similarity = vectors @ vectors.T
    category = table["category"].to_numpy()
    same = category[:, None] == category[None, :]
    off_diagonal = ~np.eye(len(table), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.2


def test_image_embeddings_pass_through_from_the_catalogue(history):
    for item_id, image in history.day2["image_embedding"].items():
        expected = history.items2.at[item_id, "image_embedding"]
        assert (image is None) == (expected is None), item_id
        if image is not None:
            np.testing.assert_array_equal(image, expected)
    assert history.day2["image_embedding"].isna().any() and history.day2["image_embedding"].notna().any()


def test_the_text_column_is_the_python_item_text(spark):
    rows = [
        ("Acme Runner 3", "Light trainer.", "running shoes", "Acme"),
        ("Acme Runner 4", None, "", "Acme"),
        ("Größe Zelt", "ü" * 50, None, None),
        ("T" * 80, "d", "c", "b"),
    ]
    config = FeaturesConfig(max_text_chars=40)
    df = spark.createDataFrame(rows, "title string, description string, category string, brand string")
    got = [r[0] for r in df.select(item_text_column(config)).collect()]
    assert got == [item_text(t, d, c, b, config.max_text_chars) for t, d, c, b in rows]


# -- reuse rules, with constant "embeddings" in place of the model, so each vector tells which run made it ----


def constant_embedding(value: float):
    return lambda text: F.array(F.lit(value), F.lit(0.0), F.lit(0.0))


def upsert_items(lake: Lake, ds: str, titles: dict[str, str]) -> None:
    rows = [
        (item_id, title, None, "tents", "Summit", 10.0, None, datetime(2025, 12, 1 + k), ds)
        for k, (item_id, title) in enumerate(sorted(titles.items()))
    ]
    lake.merge("items", lake.spark.createDataFrame(rows, ITEMS.spark))


def first_value(lake: Lake) -> dict[str, tuple[int, float]]:
    return {r.item_id: (r.item_index, r.text_embedding[0]) for r in lake.read("item_features").collect()}


def test_only_new_or_changed_items_go_through_the_encoder(lake):
    upsert_items(lake, DAY1, {"a": "Dome Tent", "b": "Family Tent", "c": "Alpine Shelter"})
    run_features(lake, DAY1, CONFIG, constant_embedding(1.0))
    assert first_value(lake) == {"a": (0, 1.0), "b": (1, 1.0), "c": (2, 1.0)}

    upsert_items(lake, DAY2, {"b": "Family Tent XL", "d": "Ultralight Tent"})
    run_features(lake, DAY2, CONFIG, constant_embedding(2.0))
    assert first_value(lake) == {"a": (0, 1.0), "b": (1, 2.0), "c": (2, 1.0), "d": (3, 2.0)}

    run_features(lake, DAY2, CONFIG, constant_embedding(3.0))
    assert first_value(lake) == {"a": (0, 1.0), "b": (1, 2.0), "c": (2, 1.0), "d": (3, 2.0)}

    run_features(lake, DAY2, CONFIG, constant_embedding(4.0), reembed_all=True)
    assert first_value(lake) == {"a": (0, 4.0), "b": (1, 4.0), "c": (2, 4.0), "d": (3, 4.0)}
    table = lake.read("item_features").toPandas()
    assert (table["n_events"] == 0).all() and table["is_cold"].all()


def test_an_item_that_leaves_the_catalogue_keeps_its_row_so_its_index_is_never_reused(lake):
    upsert_items(lake, DAY1, {"a": "Dome Tent", "b": "Family Tent"})
    run_features(lake, DAY1, CONFIG, constant_embedding(1.0))
    lake.overwrite("items", lake.read("items").where("item_id = 'a'").localCheckpoint())
    upsert_items(lake, DAY2, {"c": "Ultralight Tent"})

    df = build_item_features(lake, DAY2, CONFIG, constant_embedding(2.0))
    got = {r.item_id: (r.item_index, r.text_embedding[0], r.first_seen_ds) for r in df.collect()}
    assert got == {"a": (0, 1.0, DAY1), "b": (1, 1.0, DAY1), "c": (2, 2.0, DAY2)}


# -- the job -------------------------------------------------------------------------------------------------


def write_config(tmp_path, lake: Lake, text_encoder: str = "minilm") -> str:
    path = tmp_path / "recllm.yaml"
    path.write_text(
        f"lake:\n  root: {lake.root}\n  backend: deltars\n"
        f"features:\n  text_encoder: {text_encoder}\n  cold_min_events: {CONFIG.cold_min_events}\n"
    )
    return str(path)


def test_the_job_reruns_a_day_from_the_command_line(history, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        features_job.cli(["--ds", DAY2, "--config", write_config(tmp_path, history.lake)])
    assert f"features ds={DAY2}: item_features rows={len(history.day2)} new=" in caplog.text
    assert_df_equality(
        history.lake.read("item_features"),
        history.lake.read("item_features", version=history.version_day2),
        ignore_row_order=True,
        ignore_nullable=True,
        ignore_metadata=True,
    )


def test_the_job_fails_with_a_clear_message_for_an_unknown_encoder(lake, tmp_path, caplog):
    with pytest.raises(SystemExit) as exit_:
        features_job.cli(["--ds", DAY1, "--config", write_config(tmp_path, lake, "/models/nowhere")])
    assert exit_.value.code == 1
    assert "text encoder '/models/nowhere' is neither 'minilm' nor an existing local folder" in caplog.text
