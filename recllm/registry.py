"""The model registry: the `models` table's rows, and resolving a version to its folder.

Training names a version (`recllm.training.driver.model_version_for`) and registers it
here; scoring, evaluation, the jobs and the notebooks resolve it here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass

from pyspark.sql import functions as F

from recllm.lake import Lake, TableNotFoundError
from recllm.model.urm import CONFIG, WEIGHTS
from schemas import MODELS

LATEST_VERSION = "latest"
"""`score.model_version` / `--model-version` value meaning the newest registered version."""

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


def register_model(lake: Lake, ds: str, config, version: str, path: str, result: dict) -> None:
    """Upsert the version's row in `models` (its folder, settings and training summary)."""
    row = {
        "model_version": version,
        "created_at": dt.datetime.now(dt.timezone.utc),
        "ds": ds,
        "path": path,
        "config_json": json.dumps({"model": asdict(config.model), "train": asdict(config.train)}, sort_keys=True),
        "data_start_ds": None,
        "data_end_ds": ds,
        "metrics_json": json.dumps({k: v for k, v in result.items() if k != "history"}, sort_keys=True),
    }
    lake.merge(MODELS.name, lake.spark.createDataFrame([row], MODELS.spark))


def latest_model_row(lake: Lake):
    """The newest row of `models` (a Spark Row), or None when nothing is registered."""
    if not lake.exists(MODELS.name):
        return None
    return lake.read(MODELS.name).orderBy(F.desc("created_at")).first()


def resolve_model(lake: Lake, version: str = LATEST_VERSION) -> ModelRef:
    """The version's registry row and saved config; ModelNotFoundError names the known versions."""
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
