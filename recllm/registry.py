"""The model registry: the `models` table's rows, and resolving a version to its folder.

Training names a version (`recllm.training.driver.model_version_for`) and registers it
here; scoring, evaluation, the jobs and the notebooks resolve it here. `models` is the
lineage record; each row also names its MLflow version (`recllm.tracking`), through which
`champion` resolves.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass

from pyspark.sql import functions as F

from recllm.config import RecllmConfig
from recllm.lake import Lake, TableNotFoundError
from recllm.model.urm import CONFIG, WEIGHTS
from schemas import MODELS

log = logging.getLogger(__name__)

LATEST_VERSION = "latest"
"""`score.model_version` / `--model-version` value meaning the newest registered version."""

CHAMPION = "champion"
"""`score.model_version` / `--model-version` value meaning the version holding MLflow's alias `champion`
(evaluation promotes a version that beats popularity, `recllm.tracking.promote_champion`)."""


class ModelNotFoundError(LookupError):
    """The requested model version is not in `models`, or its folder is missing or incomplete."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and the shape facts scoring checks before any work."""

    version: str
    path: str
    n_items_trained: int
    text_dim: int
    image_dim: int


def model_row(ds: str, config, version: str, path: str, result: dict, parent_version: str | None = None,
              data_start_ds: str | None = None, mlflow_version: str | None = None) -> dict:
    """The version's `models` row: its folder, settings, data window, training summary, warm-start parent
    and MLflow version."""
    return {
        "model_version": version,
        "created_at": dt.datetime.now(dt.timezone.utc),
        "ds": ds,
        "path": path,
        "config_json": json.dumps({"model": asdict(config.model), "train": asdict(config.train)}, sort_keys=True),
        "data_start_ds": data_start_ds,
        "data_end_ds": ds,
        "metrics_json": json.dumps({k: v for k, v in result.items() if k != "history"}, sort_keys=True),
        "parent_version": parent_version,
        "mlflow_version": mlflow_version,
    }


def register_model(lake: Lake, ds: str, config, version: str, path: str, result: dict,
                   parent_version: str | None = None, data_start_ds: str | None = None) -> dict:
    """Upsert the version's row in `models` (`model_row`); returns the row."""
    return register_row(lake, model_row(ds, config, version, path, result, parent_version, data_start_ds))


def register_row(lake: Lake, row: dict) -> dict:
    """Upsert a `model_row` into `models`; returns it."""
    add_missing_columns(lake, MODELS)
    lake.merge(MODELS.name, lake.spark.createDataFrame([row], MODELS.spark))
    return row


def add_missing_columns(lake: Lake, contract) -> list[str]:
    """Add the contract's nullable columns that the existing table lacks (a lake older than the contract).

    Reads already tolerate a missing column (Spark reads it as null), but delta-rs's MERGE
    silently drops source columns the target lacks, so a `models` table written before
    `parent_version` existed would lose every parent. Returns the columns added.
    """
    if not lake.exists(contract.name):
        return []
    have = _table_columns(lake, contract.name)
    missing = [c for c in contract.columns if c.name not in have]
    if not missing:
        return []
    required = [c.name for c in missing if not c.nullable]
    if required:
        raise ValueError(f"table {contract.name} lacks non-nullable column(s) {required}: it cannot be evolved in place")
    if lake.backend == "native":
        columns = ", ".join(f"`{c.name}` {c.type.simpleString()} COMMENT '{c.doc}'" for c in missing)
        ref = lake.qualified_name(contract.name) or f"delta.`{lake.location(contract.name)}`"
        lake.spark.sql(f"ALTER TABLE {ref} ADD COLUMNS ({columns})")
    else:
        from deltalake import DeltaTable, Field

        fields = [Field(c.name, c.type.simpleString(), nullable=True, metadata={"comment": c.doc}) for c in missing]
        try:
            DeltaTable(lake.location(contract.name)).alter.add_columns(fields)
        except Exception:
            if any(c.name not in _table_columns(lake, contract.name) for c in missing):
                raise  # not a concurrent job adding the same columns first
    log.info("%s: added column(s) %s to an existing table", contract.name, [c.name for c in missing])
    return [c.name for c in missing]


def _table_columns(lake: Lake, table: str) -> set[str]:
    """Column names of the table as stored (which may predate its contract)."""
    if lake.backend == "native":
        name = lake.qualified_name(table)
        df = lake.spark.table(name) if name else lake.spark.read.format("delta").load(lake.location(table))
        return set(df.columns)
    from deltalake import DeltaTable

    return {f.name for f in DeltaTable(lake.location(table)).schema().fields}


def latest_model_row(lake: Lake):
    """The newest row of `models` (a Spark Row), or None when nothing is registered."""
    if not lake.exists(MODELS.name):
        return None
    return lake.read(MODELS.name).orderBy(F.desc("created_at")).first()


def newest_model_before(lake: Lake, ds: str, cold_only: bool = False):
    """The newest `models` row trained for a date before `ds` (latest ds, then latest created_at), or None.

    With `cold_only`, only cold starts count (rows without a `parent_version`). Rows of
    `ds` itself are left out, so rerunning a date decides as its first run did.
    """
    if not lake.exists(MODELS.name):
        return None
    rows = lake.read(MODELS.name).where(F.col("ds") < ds)
    if cold_only:
        rows = rows.where(F.col("parent_version").isNull())
    return rows.orderBy(F.desc("ds"), F.desc("created_at"), F.desc("model_version")).first()


def version_to_evaluate(score_version: str) -> str:
    """The version evaluation judges when none is named: `score.model_version`, but the newest under `champion`
    (the candidate for promotion: the champion already beat popularity)."""
    return LATEST_VERSION if score_version == CHAMPION else score_version


def resolve_model_if_any(lake: Lake, version: str = LATEST_VERSION, config: RecllmConfig | None = None) -> ModelRef | None:
    """`resolve_model`, or None when the newest version is asked for and none is registered yet (a first
    night: a scheduled job skips); a named version that is not there still fails."""
    if version == LATEST_VERSION and latest_model_row(lake) is None:
        return None
    return resolve_model(lake, version, config)


def mlflow_version_of(lake: Lake, version: str) -> str | None:
    """The MLflow version a `models` row names (None: not registered in MLflow, or an older table)."""
    if not lake.exists(MODELS.name):
        return None
    rows = lake.read(MODELS.name).where(F.col("model_version") == version)
    if "mlflow_version" not in rows.columns:
        return None
    row = rows.select("mlflow_version").first()
    return None if row is None else row.mlflow_version


def resolve_model(lake: Lake, version: str = LATEST_VERSION, config: RecllmConfig | None = None) -> ModelRef:
    """The version's registry row and saved config; ModelNotFoundError names the known versions.

    `champion` resolves through MLflow (`config.mlflow`; None: the defaults, a store beside the lake): the
    alias's model version, whose tag names the `models` row.
    """
    if version == CHAMPION:
        version = champion_version(lake, config)
    try:
        models = lake.read(MODELS.name).select("model_version", "created_at", "path").toPandas()
    except TableNotFoundError:
        raise ModelNotFoundError("no model is registered in models: run the train job first") from None
    if models.empty:
        raise ModelNotFoundError("no model is registered in models: run the train job first")
    if version == LATEST_VERSION:
        row = models.sort_values(["created_at", "model_version"]).iloc[-1]
    else:
        match = models[models["model_version"] == version]
        if match.empty:
            known = sorted(models["model_version"].tolist())
            raise ModelNotFoundError(f"model version {version!r} not found in models; known: {known}")
        row = match.iloc[0]
    path = str(row["path"])
    for name in (WEIGHTS, CONFIG):
        if not os.path.exists(os.path.join(path, name)):
            raise ModelNotFoundError(f"model version {row['model_version']!r} is registered at {path}, "
                                     f"but that folder has no {name}")
    with open(os.path.join(path, CONFIG)) as f:
        saved = json.load(f)
    return ModelRef(str(row["model_version"]), path, int(saved["n_items_trained"]), int(saved.get("text_dim", 384)),
                    int(saved.get("image_dim", 0)))


def champion_version(lake: Lake, config: RecllmConfig | None = None) -> str:
    """The recllm version holding MLflow's alias `champion` (`recllm.tracking.champion_model_version`)."""
    config = config or RecllmConfig()
    if not config.mlflow.enabled:
        raise ModelNotFoundError(f"model version {CHAMPION!r} resolves through MLflow's registry, "
                                 "which mlflow.enabled: false turns off")
    from recllm.tracking import champion_model_version

    return champion_model_version(lake.root, config.mlflow, config.evaluate.primary_objective)
