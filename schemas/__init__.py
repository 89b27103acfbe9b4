"""Table contracts for every recllm table: columns, types, nullability, keys, partitioning.

This package imports nothing of ours; the library, UDFs and jobs all read their table
layouts from here. `TABLES` maps a table's logical name to its `TableSchema`.
"""

from schemas.core import Column, TableSchema
from schemas.tables import (
    CANDIDATES,
    COLD_START_FILLS,
    CTR_SCORES,
    EVENT_TYPES,
    EVENTS,
    EVENTS_RAW,
    ITEM_FEATURES,
    ITEMS,
    ITEMS_RAW,
    LIKED_MIN_RATING,
    METRICS,
    MODELS,
    PROMPTS,
    QUARANTINE,
    TABLES,
    USERS,
    USERS_RAW,
)

__all__ = [
    "Column",
    "TableSchema",
    "TABLES",
    "EVENT_TYPES",
    "LIKED_MIN_RATING",
    "EVENTS_RAW",
    "ITEMS_RAW",
    "USERS_RAW",
    "EVENTS",
    "ITEMS",
    "USERS",
    "QUARANTINE",
    "ITEM_FEATURES",
    "PROMPTS",
    "MODELS",
    "CANDIDATES",
    "CTR_SCORES",
    "COLD_START_FILLS",
    "METRICS",
]
