"""Every recllm table.

Layers: upstream lands raw rows as strings in `*_raw` tables (a bronze layer: wrong
types and unparseable timestamps must be representable so ingest can reject them);
ingest writes the typed `events`, `items`, `users` and the `quarantine`; later jobs
write features, prompts, models and the daily outputs. `ds` is always the run date as
an ISO string `YYYY-MM-DD` (what Airflow's `{{ ds }}` gives).
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
)

from schemas.core import Column, TableSchema

S, D, L, I, B, TS = StringType(), DoubleType(), LongType(), IntegerType(), BooleanType(), TimestampType()
VECTOR = ArrayType(FloatType(), containsNull=False)
STRINGS = ArrayType(StringType(), containsNull=False)

EVENT_TYPES = ("impression", "click", "purchase", "like", "rating", "search", "tag")
"""Event types ingest accepts; anything else is quarantined as `unknown_event_type`."""

LIKED_MIN_RATING = 4.0
"""A `rating` event at or above this value is positive feedback, like a `like` (the `like`
objective, item popularity, and the CTR labels of rating-only data in the benchmark)."""

DS = Column("ds", S, False, "run date (YYYY-MM-DD) the row belongs to; the partition column")


EVENTS_RAW = TableSchema(
    name="events_raw",
    doc="Upstream behaviour log as landed, every field a string; may hold bad rows.",
    columns=(
        Column("event_id", S, True, "upstream id of the event, meant to be unique"),
        Column("user_id", S, True, "acting user"),
        Column("item_id", S, True, "item acted on (for search: the item clicked from results)"),
        Column("event_type", S, True, "impression, click, purchase, like, rating, search or tag"),
        Column("scenario", S, True, "surface the event happened on, e.g. home_feed, search"),
        Column("query", S, True, "search query text, when the event came from search"),
        Column("value", S, True, "numeric payload as text: rating, purchase amount ..."),
        Column("ts", S, True, "event time as text, ISO 8601 in UTC"),
        DS,
    ),
    keys=("event_id",),
    partition_by=("ds",),
)

ITEMS_RAW = TableSchema(
    name="items_raw",
    doc="Upstream catalogue rows as landed (new or changed items of the day).",
    columns=(
        Column("item_id", S, True, "upstream item id"),
        Column("title", S, True, "item title"),
        Column("description", S, True, "free-text description"),
        Column("category", S, True, "leaf category name"),
        Column("brand", S, True, "brand name"),
        Column("price", S, True, "price as text"),
        Column("image_embedding", VECTOR, True, "precomputed image embedding, when the catalogue has one"),
        Column("created_ts", S, True, "time the item entered the catalogue, ISO 8601 in UTC"),
        DS,
    ),
    keys=("item_id",),
    partition_by=("ds",),
)

USERS_RAW = TableSchema(
    name="users_raw",
    doc="Upstream user profiles as landed (new or changed users of the day).",
    columns=(
        Column("user_id", S, True, "upstream user id"),
        Column("age", S, True, "age in years as text"),
        Column("gender", S, True, "self-declared gender"),
        Column("country", S, True, "country code"),
        Column("profile_text", S, True, "free-text profile or bio"),
        Column("created_ts", S, True, "sign-up time, ISO 8601 in UTC"),
        DS,
    ),
    keys=("user_id",),
    partition_by=("ds",),
)

EVENTS = TableSchema(
    name="events",
    doc="Validated behaviour log: one accepted user action per row.",
    columns=(
        Column("event_id", S, False, "unique event id"),
        Column("user_id", S, False, "acting user; present in `users` when that table is populated"),
        Column("item_id", S, False, "item acted on; present in `items`"),
        Column("event_type", S, False, "impression, click, purchase, like, rating, search or tag"),
        Column("scenario", S, False, "surface the event happened on ('unknown' when upstream gave none)"),
        Column("query", S, True, "search query text"),
        Column("value", D, True, "numeric payload: rating in [0, 5], amount >= 0"),
        Column("ts", TS, False, "event time (UTC), never after the end of `ds`"),
        DS,
    ),
    keys=("event_id",),
    partition_by=("ds",),
)

ITEMS = TableSchema(
    name="items",
    doc="Validated catalogue, one row per item (upserted by item_id).",
    columns=(
        Column("item_id", S, False, "unique item id"),
        Column("title", S, False, "item title"),
        Column("description", S, True, "free-text description"),
        Column("category", S, True, "leaf category name"),
        Column("brand", S, True, "brand name"),
        Column("price", D, True, "price, >= 0"),
        Column("image_embedding", VECTOR, True, "precomputed image embedding, when the catalogue has one"),
        Column("created_ts", TS, False, "time the item entered the catalogue (UTC)"),
        Column("ds", S, False, "run date of the landing that last updated this row"),
    ),
    keys=("item_id",),
)

USERS = TableSchema(
    name="users",
    doc="Validated user profiles, one row per user (upserted by user_id). Optional.",
    columns=(
        Column("user_id", S, False, "unique user id"),
        Column("age", I, True, "age in years, 0..120"),
        Column("gender", S, True, "self-declared gender"),
        Column("country", S, True, "country code"),
        Column("profile_text", S, True, "free-text profile or bio"),
        Column("created_ts", TS, False, "sign-up time (UTC)"),
        Column("ds", S, False, "run date of the landing that last updated this row"),
    ),
    keys=("user_id",),
)

QUARANTINE = TableSchema(
    name="quarantine",
    doc="Rejected input rows with the reason; nothing is dropped silently.",
    columns=(
        DS,
        Column("run_id", S, False, "id of the ingest run that rejected the row"),
        Column("source_table", S, False, "raw table the row came from"),
        Column("reason", S, False, "first rule the row broke, e.g. null_id, future_ts"),
        Column("row_json", S, False, "the rejected row, as landed, as a JSON object"),
        Column("quarantined_at", TS, False, "wall-clock time of the rejection (UTC)"),
    ),
    keys=("ds", "source_table", "row_json"),
    partition_by=("ds",),
)

ITEM_FEATURES = TableSchema(
    name="item_features",
    doc="What the model knows of each item: its index, text and image embeddings, event counts, and whether it is cold.",
    columns=(
        Column("item_id", S, False, "item id"),
        Column("item_index", I, False, "stable integer index; never changes for a known item"),
        Column("text_embedding", VECTOR, False, "embedding of the item's title, description, category and brand "
               "(a fixed text encoder, not trained with the model)"),
        Column("image_embedding", VECTOR, True, "frozen image embedding, when the catalogue has one"),
        Column("first_seen_ds", S, False, "run date the item was first featurised"),
        Column("n_events", L, False, "accepted events on the item up to `ds`"),
        Column("n_positive", L, False, "clicks, purchases and likes on the item up to `ds`"),
        Column("is_cold", B, False, "true when the item has too few events to have been trained on"),
        Column("ds", S, False, "run date of the features job that last updated the row"),
    ),
    keys=("item_id",),
)

PROMPTS = TableSchema(
    name="prompts",
    doc="The model's examples, one per row: the prompt text describing a user's history, and what they did next.",
    columns=(
        DS,
        Column("example_id", S, False, "deterministic id of the example"),
        Column("objective", S, False, "objective name, e.g. click, purchase, search"),
        Column("template_version", S, False, "prompt template version / objective version, e.g. v1/v1"),
        Column("user_id", S, False, "user the prompt describes"),
        Column("history_item_ids", STRINGS, False, "history items in time order, one per item slot"),
        Column("history_actions", STRINGS, False, "event type of each history event, aligned with history_item_ids"),
        Column("prompt_text", S, False, "rendered prompt, one item slot per history item; query tokens not included"),
        Column("target_item_ids", STRINGS, True, "positive items the example should retrieve"),
        Column("label", D, True, "binary label for CTR examples"),
        Column("split", S, False, "train, valid, test or infer"),
        Column("cutoff_ts", TS, False, "history holds only events strictly before this time"),
    ),
    keys=("ds", "example_id"),
    partition_by=("ds",),
)

MODELS = TableSchema(
    name="models",
    doc="Every trained model version: where its files are, what data it saw, how it validated, what it started from.",
    columns=(
        Column("model_version", S, False, "unique version id"),
        Column("created_at", TS, False, "time training finished (UTC)"),
        Column("ds", S, False, "run date of the training job"),
        Column("path", S, False, "directory holding safetensors weights, config and tokenizer"),
        Column("config_json", S, False, "model and training configuration as JSON"),
        Column("data_start_ds", S, True, "first run date of the training data window"),
        Column("data_end_ds", S, False, "last run date of the training data window"),
        Column("metrics_json", S, True, "validation metrics as JSON"),
        Column("parent_version", S, True, "version a warm start continued from; null for a cold start"),
        Column("mlflow_version", S, True, "its version of the MLflow registered model (mlflow.registered_model_name); "
               "null when MLflow is off"),
    ),
    keys=("model_version",),
)

CANDIDATES = TableSchema(
    name="candidates",
    doc="Each night's recommendations: for every user and objective, the K best items of the whole catalogue, best first.",
    columns=(
        DS,
        Column("objective", S, False, "objective the set was produced for"),
        Column("user_id", S, False, "user"),
        Column("rank", I, False, "1-based rank within the user's set"),
        Column("item_id", S, False, "candidate item"),
        Column("score", D, False, "how strongly the model recommends the item to the user; higher is better, "
               "comparable within one night's model version, not a probability"),
        Column("model_version", S, False, "model version that scored it"),
    ),
    keys=("ds", "objective", "user_id", "rank"),
    partition_by=("ds",),
)

CTR_SCORES = TableSchema(
    name="ctr_scores",
    doc="Predicted click probabilities for (user, item, surface) pairs, one row per pair and night.",
    columns=(
        DS,
        Column("user_id", S, False, "user"),
        Column("item_id", S, False, "item"),
        Column("scenario", S, False, "surface the pair would be shown on"),
        Column("p_click", D, False, "predicted probability, from 0 to 1, that the user clicks the item on this surface"),
        Column("model_version", S, False, "model version that scored it"),
    ),
    keys=("ds", "user_id", "item_id", "scenario"),
    partition_by=("ds",),
)

COLD_START_FILLS = TableSchema(
    name="cold_start_fills",
    doc="Cold start: slots that show new items to likely users, and candidates for users with no history yet.",
    columns=(
        DS,
        Column("user_id", S, False, "user"),
        Column("rank", I, False, "1-based rank within the user's fills"),
        Column("item_id", S, False, "item"),
        Column("score", D, False, "how strongly the model recommends the pair; higher is better"),
        Column("reason", S, False, "new_item: a new item shown to this user; new_user: a candidate for a new user"),
        Column("model_version", S, False, "model version that scored it"),
    ),
    keys=("ds", "reason", "user_id", "rank"),
    partition_by=("ds",),
)

METRICS = TableSchema(
    name="metrics",
    doc="Nightly offline evaluation: how well each model version and each baseline predicted the held-out day.",
    columns=(
        DS,
        Column("model", S, False, "model version (urm-...) or baseline name: popularity, als, sasrec, gbt_ctr"),
        Column("task", S, False, "objective evaluated (click, purchase, search ...) or ctr for click probabilities"),
        Column("metric", S, False, "recall, hr, ndcg, mrr, coverage, novelty, cold_recall; auc, gauc, logloss for ctr"),
        Column("k", I, False, "list length the metric looks at (top 10, top 50); 0 for ctr metrics"),
        Column("value", D, False, "the metric's value; higher is better except for logloss"),
        Column("n", L, False, "number of test users or examples the value averages over (for error bars)"),
    ),
    keys=("ds", "model", "task", "metric", "k"),
    partition_by=("ds",),
)

TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        EVENTS_RAW,
        ITEMS_RAW,
        USERS_RAW,
        EVENTS,
        ITEMS,
        USERS,
        QUARANTINE,
        ITEM_FEATURES,
        PROMPTS,
        MODELS,
        CANDIDATES,
        CTR_SCORES,
        COLD_START_FILLS,
        METRICS,
    )
}
