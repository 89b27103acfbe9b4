"""MLflow beside the lake: every training run is logged and registered as a model version, evaluation gives
the alias `champion` to a version that beats popularity, and `champion` scores through the registry.
Against the real SQLite store the small demo's training wrote, never a mock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from recllm.config import load_config
from recllm.lake import Lake
from recllm.model.urm import CONFIG, WEIGHTS
from recllm.registry import CHAMPION, ModelNotFoundError, resolve_model
from recllm.tracking import MODEL_VERSION_TAG, NoChampionError, client, promote_champion
from recllm.training.model_card import MODEL_CARD
from tests.helpers import read_delta_rs

LAST_DS = "2026-01-04"  # the small demo's last night


def _models(lake_root) -> pd.DataFrame:
    """The `models` rows, oldest first."""
    return read_delta_rs(os.path.join(lake_root, "models")).sort_values("created_at").reset_index(drop=True)


def _recall_rows(model_version: str, ours: float, popular: float) -> pd.DataFrame:
    """`metrics` rows as evaluation writes them: the model's and popularity's recall@10 on click."""
    return pd.DataFrame([dict(ds=LAST_DS, model=m, task="click", metric="recall", k=10, value=v, n=30)
                         for m, v in ((model_version, ours), ("popularity", popular))])


def test_each_demo_training_run_is_logged_and_registered_beside_the_lake(small_demo):
    root = str(small_demo.root / "lake")
    config = load_config(small_demo.root / "recllm.yaml")
    assert os.path.exists(small_demo.root / "mlflow.db") and os.path.isdir(small_demo.root / "mlflow-artifacts")
    models = _models(root)
    assert len(models) >= 2 and models["mlflow_version"].notna().all()
    mlflow = client(config.mlflow, root)
    for row in models.itertuples():
        registered = mlflow.get_model_version("recllm", row.mlflow_version)
        assert registered.tags[MODEL_VERSION_TAG] == row.model_version
        run = mlflow.get_run(registered.run_id)
        assert run.data.params["model_version"] == row.model_version and run.data.params["model.hidden_size"] == "32"
        epochs = mlflow.get_metric_history(run.info.run_id, "valid_recall_at_10")
        assert [m.step for m in epochs] == list(range(len(epochs))) and len(epochs) >= 1
        assert len(mlflow.get_metric_history(run.info.run_id, "loss")) == len(epochs)
        assert run.data.metrics["examples_per_s"] > 0 and run.data.metrics["tokens_per_s"] > 0
        assert run.data.metrics["peak_memory_bytes"] > 0
        artifacts = {os.path.basename(a.path) for a in mlflow.list_artifacts(run.info.run_id, "model")}
        assert {WEIGHTS, CONFIG, MODEL_CARD, "MLmodel"} <= artifacts
        assert set(os.listdir(row.path)) <= artifacts  # every file scoring loads
    assert mlflow.get_experiment_by_name("recllm").artifact_location == str(small_demo.root / "mlflow-artifacts")


def test_evaluation_promotes_champion_only_over_popularity_and_champion_scores(small_demo, spark, tmp_path):
    """On a copy of the demo's lake and MLflow store: promotion moves the alias only when the version's
    recall@10 on click beats popularity's, and `jobs.score --model-version champion` scores with it."""
    from jobs import score

    shutil.copytree(small_demo.root / "lake", tmp_path / "lake")
    shutil.copy(small_demo.root / "mlflow.db", tmp_path / "mlflow.db")
    settings = yaml.safe_load((small_demo.root / "recllm.yaml").read_text())
    settings["lake"]["root"] = str(tmp_path / "lake")
    settings["score"]["work_root"] = str(tmp_path / "scoring")
    (tmp_path / "recllm.yaml").write_text(yaml.safe_dump(settings))
    config = load_config(tmp_path / "recllm.yaml")
    root = str(tmp_path / "lake")
    older, newest = _models(root).iloc[-2], _models(root).iloc[-1]
    mlflow = client(config.mlflow, root)

    assert promote_champion(root, config, older.model_version, older.mlflow_version,
                            _recall_rows(older.model_version, 0.30, 0.20)).promoted
    kept = promote_champion(root, config, newest.model_version, newest.mlflow_version,
                            _recall_rows(newest.model_version, 0.20, 0.20))  # a tie does not beat popularity
    assert not kept.promoted and "does not beat popularity" in kept.reason
    assert str(mlflow.get_model_version_by_alias("recllm", CHAMPION).version) == older.mlflow_version
    assert promote_champion(root, config, newest.model_version, newest.mlflow_version,
                            _recall_rows(newest.model_version, 0.25, 0.20)).promoted
    assert str(mlflow.get_model_version_by_alias("recllm", CHAMPION).version) == newest.mlflow_version

    assert resolve_model(Lake(spark, root=root, backend="deltars"), CHAMPION, config).version == newest.model_version
    # the older version back as champion: scoring by alias must then differ from scoring the latest
    promote_champion(root, config, older.model_version, older.mlflow_version, _recall_rows(older.model_version, 0.3, 0.2))
    score.cli(["--config", str(tmp_path / "recllm.yaml"), "--ds", LAST_DS, "--model-version", CHAMPION,
               "--log-level", "WARNING"])
    candidates = read_delta_rs(str(tmp_path / "lake" / "candidates")).query(f"ds == '{LAST_DS}'")
    assert len(candidates) > 0 and set(candidates["model_version"]) == {older.model_version}


def test_champion_before_any_promotion_names_how_one_is_made(lake, tmp_path):
    config = load_config()
    message = "no model holds the alias champion yet .*evaluate promotes one when it beats popularity on click"
    with pytest.raises(NoChampionError, match=message):
        resolve_model(lake, CHAMPION, config)  # no store yet: none is created by asking
    assert not (tmp_path / "mlflow.db").exists()
    client(config.mlflow, lake.root).create_registered_model("recllm")  # a store with the model, no alias yet
    with pytest.raises(NoChampionError, match=message):
        resolve_model(lake, CHAMPION, config)


def test_a_models_table_older_than_mlflow_version_names_none_then_gains_the_column(lake):
    import datetime as dt

    import pyarrow as pa
    from deltalake import write_deltalake

    from recllm.registry import mlflow_version_of, model_row, register_row
    from schemas import MODELS

    old = pa.schema([f for f in MODELS.arrow if f.name != "mlflow_version"])
    row = {"model_version": "urm-2026-01-01-00000000", "created_at": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
           "ds": "2026-01-01", "path": "/nowhere", "config_json": "{}", "data_start_ds": None,
           "data_end_ds": "2026-01-01", "metrics_json": "{}", "parent_version": None}
    write_deltalake(lake.location(MODELS.name), pa.Table.from_pylist([row], old))
    assert mlflow_version_of(lake, "urm-2026-01-01-00000000") is None

    register_row(lake, model_row("2026-01-02", load_config(), "urm-2026-01-02-11111111", "/nowhere2", {},
                                 mlflow_version="3"))
    assert mlflow_version_of(lake, "urm-2026-01-02-11111111") == "3"
    assert mlflow_version_of(lake, "urm-2026-01-01-00000000") is None


def test_with_mlflow_off_champion_is_refused_naming_the_setting(lake, tmp_path):
    config = load_config(overrides={"mlflow": {"enabled": False}})
    with pytest.raises(ModelNotFoundError, match="resolves through MLflow's registry, which mlflow.enabled: false"):
        resolve_model(lake, CHAMPION, config)
    assert not (tmp_path / "mlflow.db").exists()


def test_the_jobs_and_the_library_load_without_importing_mlflow():
    """MLflow is imported only when a run logs, a version is promoted or `champion` resolves, so a lake with
    `mlflow.enabled: false` never loads it."""
    script = ("import sys, jobs.nightly, jobs.train, jobs.score, jobs.evaluate, recllm.nightly, recllm.registry; "
              "print('mlflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("text, message", [
    ("mlflow: {experiment: '  '}", "mlflow.experiment must not be empty"),
    ("mlflow: {tracking_uri: ''}", "mlflow.tracking_uri must not be empty"),
    ("mlflow: {enabled: maybe}", "config key mlflow.enabled: expected bool"),
    ("evaluate: {primary_objective: ''}", "evaluate.primary_objective must not be empty"),
])
def test_a_malformed_mlflow_setting_is_refused_naming_the_key(tmp_path, text, message):
    from recllm.config import ConfigError

    (tmp_path / "recllm.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "recllm.yaml")


def test_the_embedded_store_sits_beside_the_lake_unless_a_uri_is_set(tmp_path):
    from recllm.config import MlflowConfig
    from recllm.tracking import registry_uri, tracking_uri

    lake_root = str(tmp_path / "lake")
    assert tracking_uri(MlflowConfig(), lake_root) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert registry_uri(MlflowConfig(), lake_root) == tracking_uri(MlflowConfig(), lake_root)
    on_databricks = MlflowConfig(tracking_uri="databricks", registry_uri="databricks-uc",
                                 registered_model_name="main.recllm.urm")
    assert (tracking_uri(on_databricks, lake_root), registry_uri(on_databricks, lake_root)) == ("databricks",
                                                                                              "databricks-uc")
