"""MLflow: each training run's record, the registered model versions, and the `champion` alias.

`log_training_run` logs a run (its settings, per-epoch loss and validation recall, throughput,
peak memory, the model folder as artifacts) and registers a version of
`mlflow.registered_model_name` tagged with the recllm version; the `models` Delta table stays
the lineage record and names that MLflow version. `promote_champion` (the evaluate stage) gives
the version the alias `champion` when it beats popularity on `evaluate.primary_objective`, and
`champion_model_version` (`score.model_version: champion`) reads it back.

Embedded default: a SQLite store beside the lake (`mlflow.db`, artifacts in `mlflow-artifacts/`);
on Databricks, `mlflow.tracking_uri: databricks` with `registry_uri: databricks-uc` and a
three-part model name. MLflow is imported only here, and only when `mlflow.enabled`; its
telemetry is turned off first, so nothing reaches for the network.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass

import pandas as pd

from recllm.config import MlflowConfig
from recllm.registry import CHAMPION, ModelNotFoundError

log = logging.getLogger(__name__)

# before MLflow is first imported (it starts its telemetry client on import): no usage pings, nothing reaches the network
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

MODEL_VERSION_TAG = "recllm.model_version"
"""Tag on each MLflow model version (and run) naming its recllm version, the `models` row's key."""

ARTIFACT_PATH = "model"
"""Where in a run's artifacts the model folder (the files scoring loads) lies."""

PRIMARY_METRIC = ("recall", 10)
"""(metric, k) of `metrics` that decides promotion, on `evaluate.primary_objective`."""


class NoChampionError(ModelNotFoundError):
    """`champion` was asked for, but no MLflow model version holds that alias yet."""


@dataclass(frozen=True)
class Promotion:
    """What `promote_champion` decided for a version, and why."""

    promoted: bool
    reason: str
    mlflow_version: str | None = None


def store_folder(lake_root: str) -> str:
    """The folder beside the lake that holds the embedded store: the lake root's parent."""
    return os.path.dirname(os.path.abspath(lake_root.rstrip("/")))


def tracking_uri(config: MlflowConfig, lake_root: str) -> str:
    """`mlflow.tracking_uri`, or the SQLite store beside the lake when it is null."""
    return config.tracking_uri or f"sqlite:///{os.path.join(store_folder(lake_root), 'mlflow.db')}"


def registry_uri(config: MlflowConfig, lake_root: str) -> str:
    """`mlflow.registry_uri`, or the tracking store's when it is null."""
    return config.registry_uri or tracking_uri(config, lake_root)


def client(config: MlflowConfig, lake_root: str):
    """An `MlflowClient` on the configured tracking and registry stores."""
    if not config.enabled:
        raise ValueError("MLflow is off (mlflow.enabled: false)")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(config, lake_root), registry_uri=registry_uri(config, lake_root))


def experiment_id(mlflow_client, config: MlflowConfig, lake_root: str) -> str:
    """The id of `mlflow.experiment`, created on first use (embedded store: artifacts in `mlflow-artifacts/`)."""
    found = mlflow_client.get_experiment_by_name(config.experiment)
    if found is not None:
        return found.experiment_id
    artifacts = None if config.tracking_uri else os.path.join(store_folder(lake_root), "mlflow-artifacts")
    try:
        return mlflow_client.create_experiment(config.experiment, artifact_location=artifacts)
    except Exception:
        found = mlflow_client.get_experiment_by_name(config.experiment)  # a concurrent job created it first
        if found is None:
            raise
        return found.experiment_id


def flat_params(row: dict, config) -> dict[str, str]:
    """The run's parameters: the `model:`, `train:` and `prompts:` settings as `section.key`, plus the run date,
    version and warm-start parent; nested values (`prompts.objectives`) as JSON."""
    params = {"ds": row["ds"], "model_version": row["model_version"], "parent_version": str(row.get("parent_version"))}
    for section in ("model", "train", "prompts"):
        for key, value in asdict(getattr(config, section)).items():
            params[f"{section}.{key}"] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return params


def epoch_metrics(history: list[dict] | None) -> list[tuple[str, float, int]]:
    """(name, value, epoch) for each number of each epoch's summary: `loss`, `valid_recall_at_K` (its valid
    recall@K), and its speed as `epoch_examples_per_s`, `epoch_tokens_per_s`, ... (the run's own are unprefixed)."""
    out = []
    for h in history or []:
        for key, value in h.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if "@" in key:
                name = f"valid_{key.replace('@', '_at_')}"
            elif key == "loss":
                name = key
            else:
                name = f"epoch_{key}"
            out.append((name, float(value), int(h["epoch"])))
    return out


def run_metrics(result: dict) -> dict[str, float]:
    """The run's summary numbers: best valid recall, epochs, steps, examples/s, tokens/s, peak memory, ..."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "history"}


def log_training_run(lake_root: str, config, row: dict, result: dict, model_dir: str) -> str:
    """Log a training run to MLflow and register its model version; returns the MLflow version (a string).

    `row` is the version's `models` row (`recllm.registry.model_row`), `result` `run_training`'s summary with its
    per-epoch `history`, `model_dir` the folder scoring loads (its files become the run's `model/` artifacts).
    The registered version's source is those artifacts; its tag `recllm.model_version` names the row.
    """
    from mlflow.entities import Metric, Param, RunTag

    settings = config.mlflow
    mlflow_client = client(settings, lake_root)
    run = mlflow_client.create_run(experiment_id(mlflow_client, settings, lake_root),
                                   run_name=row["model_version"], tags={MODEL_VERSION_TAG: row["model_version"]})
    run_id = run.info.run_id
    try:
        params = [Param(k, v) for k, v in flat_params(row, config).items()]
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, epoch) for name, value, epoch in epoch_metrics(result.get("history"))]
        metrics += [Metric(name, value, now, 0) for name, value in run_metrics(result).items()]
        for start in range(0, max(len(params), len(metrics)), 100):  # MLflow takes at most 100 params a batch
            mlflow_client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                                    tags=[RunTag("recllm.ds", row["ds"])] if start == 0 else [])
        mlflow_client.log_artifacts(run_id, model_dir, ARTIFACT_PATH)
        _log_signature(mlflow_client, run_id)
        mlflow_client.set_terminated(run_id)
    except Exception:
        mlflow_client.set_terminated(run_id, status="FAILED")
        raise
    name = settings.registered_model_name
    _ensure_registered_model(mlflow_client, name)
    version = mlflow_client.create_model_version(
        name, source=f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}", run_id=run_id,
        tags={MODEL_VERSION_TAG: row["model_version"]},
        description=f"recllm {row['model_version']} trained for {row['ds']}")
    log.info("MLflow: run %s logged (%d params, %d metric values, artifacts %s/%s); registered %s version %s",
             run_id, len(params), len(metrics), run.info.artifact_uri, ARTIFACT_PATH, name, version.version)
    return str(version.version)


def _log_signature(mlflow_client, run_id: str) -> None:
    """An `MLmodel` file beside the model's files saying what it takes and gives (Unity Catalog registers only
    models with a signature); the folder loads with `recllm.model.urm.URM.from_pretrained`, not pyfunc."""
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "prompt_text"), ColSpec("string", "history_item_ids")]),
        outputs=Schema([ColSpec("string", "item_id"), ColSpec("double", "score")]))
    with tempfile.TemporaryDirectory() as folder:
        Model(artifact_path=ARTIFACT_PATH, run_id=run_id, signature=signature).save(os.path.join(folder, "MLmodel"))
        mlflow_client.log_artifact(run_id, os.path.join(folder, "MLmodel"), ARTIFACT_PATH)


def _ensure_registered_model(mlflow_client, name: str) -> None:
    """Create the registered model unless it is there (or a concurrent job created it first)."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(name, description="recllm URM versions, one per training run")
        except MlflowException:
            mlflow_client.get_registered_model(name)


def primary_comparison(metrics: pd.DataFrame, model_version: str, objective: str) -> tuple[float | None, float | None]:
    """(the model's, popularity's) `PRIMARY_METRIC` on `objective` in `metrics` rows; None where a row is missing."""
    from recllm.evaluation.evaluate import POPULARITY

    metric, k = PRIMARY_METRIC
    rows = metrics[(metrics["task"] == objective) & (metrics["metric"] == metric) & (metrics["k"] == k)]

    def value(model: str) -> float | None:
        found = rows.loc[rows["model"] == model, "value"]
        return float(found.iloc[0]) if len(found) else None

    return value(model_version), value(POPULARITY)


def promote_champion(lake_root: str, config, model_version: str, mlflow_version: str | None,
                     metrics: pd.DataFrame) -> Promotion:
    """Give `mlflow_version` (the MLflow version of recllm `model_version`) the alias `champion` when its
    `PRIMARY_METRIC` on `evaluate.primary_objective` beats popularity's in `metrics` (the evaluate stage's
    rows); otherwise the alias stays where it is. Logs and returns the decision."""
    objective = config.evaluate.primary_objective
    metric = f"{PRIMARY_METRIC[0]}@{PRIMARY_METRIC[1]}"
    ours, popular = primary_comparison(metrics, model_version, objective)
    if mlflow_version is None:
        decision = Promotion(False, f"{model_version} has no MLflow version (trained with MLflow off): not promoted")
    elif ours is None or popular is None:
        decision = Promotion(False, f"no {metric} of {model_version} and popularity on {objective} to compare: "
                             f"the {CHAMPION} alias stays where it is", mlflow_version)
    elif ours <= popular:
        decision = Promotion(False, f"{model_version} {metric} {ours:.4f} on {objective} does not beat popularity's "
                             f"{popular:.4f}: the {CHAMPION} alias stays where it is", mlflow_version)
    else:
        name = config.mlflow.registered_model_name
        client(config.mlflow, lake_root).set_registered_model_alias(name, CHAMPION, mlflow_version)
        decision = Promotion(True, f"{model_version} (MLflow {name} version {mlflow_version}) is now {CHAMPION}: "
                             f"{metric} {ours:.4f} on {objective} beats popularity's {popular:.4f}", mlflow_version)
    log.info("MLflow promotion: %s", decision.reason)
    return decision


def champion_model_version(lake_root: str, config: MlflowConfig, objective: str = "click") -> str:
    """The recllm version whose MLflow version holds the alias `champion`; NoChampionError when none does
    (`objective`: the primary objective, named in the error)."""
    none_yet = NoChampionError(f"no model holds the alias {CHAMPION} yet in MLflow's {config.registered_model_name}; "
                               f"evaluate promotes one when it beats popularity on {objective}")
    store = registry_uri(config, lake_root)
    if store.startswith("sqlite:///") and not os.path.exists(store.removeprefix("sqlite:///")):
        raise none_yet  # no store yet: asking must not create one
    from mlflow.exceptions import MlflowException

    try:
        found = client(config, lake_root).get_model_version_by_alias(config.registered_model_name, CHAMPION)
    except MlflowException:
        raise none_yet from None
    version = found.tags.get(MODEL_VERSION_TAG)
    if not version:
        raise ModelNotFoundError(f"MLflow {config.registered_model_name} version {found.version} holds {CHAMPION} "
                                 f"but has no {MODEL_VERSION_TAG} tag naming a models row")
    return version
