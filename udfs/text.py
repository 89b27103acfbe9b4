"""Spark binding of the text encoder: a pandas UDF from item text to its frozen embedding.

    embed = text_embedding_udf("minilm", batch_size=64)
    items.select("item_id", embed("text").alias("text_embedding"))

Built on `pyspark.ml.functions.predict_batch_udf`: each Python worker builds the predict
function once, and the model behind it comes from `recllm.model.text_encoder`'s module-level
cache, so a worker loads the model once however many tasks and queries it serves. `predict`
gets up to ROWS_PER_PREDICT rows at once and `encode_texts` cuts them into `batch_size` model
calls, logging its progress (recllm's INFO lines go to the worker's stderr, the executor log).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql.types import ArrayType, FloatType

from recllm.model.text_encoder import resolve_encoder_path

ROWS_PER_PREDICT = 10_000
"""Rows handed to `predict` at once: Spark's default Arrow batch, so progress spans a batch, not one model call."""


def text_embedding_udf(encoder_path: str, batch_size: int = 64):
    """A pandas UDF: string column -> array<float> L2-normalised embedding, `batch_size` rows per model call."""
    path = resolve_encoder_path(encoder_path)
    return predict_batch_udf(
        _make_predict_fn(path, batch_size), return_type=ArrayType(FloatType()),
        batch_size=max(batch_size, ROWS_PER_PREDICT),
    )


def _make_predict_fn(path: str, batch_size: int) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    """The per-worker factory predict_batch_udf calls: loads (or reuses) the encoder, returns predict."""

    def make_predict_fn() -> Callable[[np.ndarray], np.ndarray]:
        from recllm.model.text_encoder import encode_texts, load_text_encoder
        from recllm.progress import log_recllm_info_to_stderr

        log_recllm_info_to_stderr()
        load_text_encoder(path)

        def predict(texts: np.ndarray) -> np.ndarray:
            return encode_texts(texts.tolist(), path, batch_size)

        return predict

    return make_predict_fn
