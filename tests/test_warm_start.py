"""Warm starts: a nightly model continues from the newest earlier one (tokenizer kept, ID rows grown for
new items, trained on the day's new examples), a cold retrain comes on its cadence, `models` names the parent."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import replace

import pytest
import torch
from pyspark.sql import functions as F
from safetensors.torch import load_file

from recllm.config import ConfigError, load_config
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.model.batching import Collator
from recllm.model.urm import ItemCatalog, URM, load_tokenizer
from recllm.nightly import land_and_prepare, start_decision
from recllm.pipeline.features import run_features
from recllm.pipeline.ingest import run_ingest
from recllm.pipeline.prompts import run_prompts
from recllm.registry import latest_model_row, newest_model_before, register_model, resolve_model
from recllm.training.driver import (WARM_EXAMPLES_DIR, Start, choose_start, grow_id_embeddings, model_version_for,
                                    prepare_training, run_training, training_target_counts)
from recllm.training.loop import BEST_DIR, train_fn
from recllm.training.stream import ShardStream
from schemas import MODELS
from tests.helpers import hashed_text_embedding, tiny_catalog, tiny_model

ID_WEIGHT = "fusion.id_embedding.weight"


# -- settings and names (no Spark) ------------------------------------------------------------------------


def test_nightly_warm_starts_by_default_with_a_weekly_cold_retrain():
    config = load_config("jobs/conf/default.yaml")
    assert config.train.warm_start and config.nightly.cold_retrain_every_days == 7
    assert load_config().train.warm_start and load_config().nightly.cold_retrain_every_days == 7


@pytest.mark.parametrize("text, message", [
    ("train: {warm_epochs: 0}\n", r"train\.warm_epochs must be at least 1"),
    ("train: {warm_patience: 0}\n", r"train\.warm_patience must be at least 1"),
    ("train: {warm_replay_fraction: 1.5}\n", r"train\.warm_replay_fraction must be at most 1"),
    ("train: {warm_replay_fraction: -0.1}\n", r"train\.warm_replay_fraction must be at least 0"),
    ("train: {warm_lr_scale: 0}\n", r"train\.warm_lr_scale must be greater than 0"),
    ("train: {warm_start: maybe}\n", r"config key train\.warm_start: expected bool"),
    ("nightly: {cold_retrain_every_days: -1}\n", r"nightly\.cold_retrain_every_days must be at least 0"),
])
def test_warm_start_settings_out_of_range_are_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_warm_version_never_takes_the_name_of_the_same_days_cold_model():
    config = load_config()
    cold = model_version_for("2026-01-05", config)
    warm = model_version_for("2026-01-05", config, parent_version="urm-2026-01-04-aaaaaaaa")
    assert warm != cold and warm.startswith("urm-2026-01-05-") and warm.endswith("-warm")
    assert model_version_for("2026-01-05", config, parent_version="urm-2026-01-03-bbbbbbbb") != warm
    # the warm settings name warm versions only: a cold version keeps its name whatever they are
    other = replace(config, train=replace(config.train, warm_epochs=9, warm_replay_fraction=0.5, warm_start=False))
    assert model_version_for("2026-01-05", other) == cold
    assert model_version_for("2026-01-05", other, parent_version="urm-2026-01-04-aaaaaaaa") != warm
    # nor do where and how the ranks run, their arithmetic included: a rerun in bf16 resumes the same version
    placed = replace(config, train=replace(config.train, precision="bf16", use_gpu="true", torch_threads=1))
    assert model_version_for("2026-01-05", placed) == cold


def test_growing_id_embeddings_keeps_old_rows_and_adds_fresh_ones_for_new_items(tokenizer):
    model = tiny_model(tokenizer, n_items_trained=7)
    before = model.fusion.id_embedding.weight.detach().clone()
    grown = grow_id_embeddings(model, 12, seed=3)
    weight = grown.fusion.id_embedding.weight.detach()
    assert weight.shape == (12, before.shape[1])
    assert torch.equal(weight[:7], before)
    assert 0.005 < weight[7:].std() < 0.05  # initialised as a fresh model's rows (std 0.02), not zeros or copies
    assert grown.config.n_items_trained == 12 and grown.fusion.n_items_trained == 12
    with pytest.raises(ValueError, match="fewer than the 12"):
        grow_id_embeddings(grown, 10)


def test_growing_keeps_learned_biases_and_starts_new_items_where_a_cold_retrain_would(tokenizer):
    model = tiny_model(tokenizer, n_items_trained=7, item_bias=True)
    with torch.no_grad():
        model.item_bias.weight.normal_()
    learned = model.item_bias.weight.detach().clone()
    counts = torch.tensor([5.0, 0, 0, 0, 0, 0, 0, 3, 0, 9, 0, 1])
    eligible = counts > 0
    grown = grow_id_embeddings(model, 12, bias_start=(counts, eligible))
    bias = grown.item_bias.weight.detach()[:, 0]
    assert torch.equal(bias[:7], learned[:, 0])
    centre = torch.log1p(counts[eligible]).mean()
    assert torch.allclose(bias[7:], torch.where(eligible, torch.log1p(counts) - centre, torch.zeros(12))[7:])
    assert bias[8] == 0 and bias[10] == 0  # never a target in the window: the average item
    plain = grow_id_embeddings(tiny_model(tokenizer, n_items_trained=7, item_bias=True), 12)
    assert torch.equal(plain.item_bias.weight[7:], torch.zeros(5, 1))


def test_growing_keeps_learned_ctr_item_offsets_and_starts_new_items_at_zero(tokenizer):
    model = tiny_model(tokenizer, n_items_trained=7, ctr_item_bias=True)
    with torch.no_grad():
        model.ctr_item_offset.weight.normal_()
    learned = model.ctr_item_offset.weight.detach().clone()
    grown = grow_id_embeddings(model, 12)
    assert torch.equal(grown.ctr_item_offset.weight[:7], learned)
    assert torch.equal(grown.ctr_item_offset.weight[7:], torch.zeros(5, 1))


def test_a_grown_model_saves_and_loads_with_the_new_shape(tokenizer, tmp_path):
    model = grow_id_embeddings(tiny_model(tokenizer, n_items_trained=7), 12)
    model.save_pretrained(str(tmp_path), tokenizer, tiny_catalog())
    loaded = URM.from_pretrained(str(tmp_path))
    assert loaded.config.n_items_trained == 12
    assert torch.equal(loaded.fusion.id_embedding.weight, model.fusion.id_embedding.weight)
    assert loaded.item_vectors(ItemCatalog.load(str(tmp_path))).shape[0] == 12


# -- the models table's new column -------------------------------------------------------------------------


def _old_models_table(lake: Lake) -> None:
    """A `models` table as written before `parent_version` existed: one row, the old columns."""
    import pyarrow as pa
    from deltalake import write_deltalake

    old = pa.schema([f for f in MODELS.arrow if f.name != "parent_version"])
    row = {"model_version": "urm-2026-01-01-00000000", "created_at": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
           "ds": "2026-01-01", "path": "/nowhere", "config_json": "{}", "data_start_ds": None,
           "data_end_ds": "2026-01-01", "metrics_json": "{}"}
    write_deltalake(lake.location(MODELS.name), pa.Table.from_pylist([row], old))


def test_a_models_table_older_than_parent_version_reads_and_gains_the_column(spark, lake):
    _old_models_table(lake)
    row = latest_model_row(lake)
    assert row.model_version == "urm-2026-01-01-00000000" and row.parent_version is None
    assert newest_model_before(lake, "2026-01-02", cold_only=True).model_version == row.model_version

    config = load_config()
    register_model(lake, "2026-01-02", config, "urm-2026-01-02-11111111-warm", "/nowhere2",
                   {"best_valid_recall": 0.5}, parent_version="urm-2026-01-01-00000000")
    from deltalake import DeltaTable

    assert "parent_version" in [f.name for f in DeltaTable(lake.location(MODELS.name)).schema().fields]
    parents = {r.model_version: r.parent_version for r in lake.read(MODELS.name).collect()}
    assert parents == {"urm-2026-01-01-00000000": None, "urm-2026-01-02-11111111-warm": "urm-2026-01-01-00000000"}
    # and the newest cold model is still the old row, the warm one is the newest of all
    assert newest_model_before(lake, "2026-01-03", cold_only=True).model_version == "urm-2026-01-01-00000000"
    assert newest_model_before(lake, "2026-01-03").model_version == "urm-2026-01-02-11111111-warm"


# -- a parent, a new day, a warm start -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Five synthetic days: a cold parent trained as of day 4 (in-process, one rank) and registered;
    day 5 then landed, ingested, featurised (new items arrive) and prompted."""
    root = tmp_path_factory.mktemp("warm")
    lake = Lake(spark, root=str(root / "lake"), backend="deltars")
    days, _ = generate(SyntheticConfig(seed=5, n_users=120, n_items=60, n_days=5, impressions_per_user_day=12,
                                       new_item_fraction_per_day=0.1))
    config = load_config(overrides={
        "train": {"model_root": str(root / "models"), "epochs": 12, "patience": 2, "batch_size": 64,
                  "num_processes": 1, "torch_threads": 2, "checkpoint_every_steps": 1000},  # warm_*: the defaults
        "model": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128, "vocab_size": 800},
        "prompts": {"history_length": 10},
    })
    parent_ds = land_and_prepare(lake, days[:-1], config, hashed_text_embedding)
    plan = prepare_training(lake, parent_ds, config)
    parent = train_fn(plan)
    register_model(lake, parent_ds, config, plan.model_version, os.path.join(plan.work_dir, BEST_DIR), parent)
    day = days[-1]
    land_day(lake, day)
    run_ingest(lake, day.ds, config.ingest)
    run_features(lake, day.ds, config.features, hashed_text_embedding)
    run_prompts(lake, day.ds, config.prompts)
    return {"lake": lake, "config": config, "ds": day.ds, "parent_ds": parent_ds, "parent": plan.model_version,
            "parent_path": os.path.join(plan.work_dir, BEST_DIR), "root": root}


@pytest.mark.slow  # the module's parent model is trained in its fixture (minutes)
def test_the_newest_compatible_model_is_chosen_as_parent(world):
    start = choose_start(world["lake"], world["ds"], world["config"])
    assert start.warm and start.parent_version == world["parent"] and start.parent_ds == world["parent_ds"]
    assert start.new_examples > 0 and world["parent"] in start.reason
    assert start_decision(world["lake"], world["ds"], world["config"]) == start


@pytest.mark.slow  # the module's parent model is trained in its fixture (minutes)
def test_a_warm_plan_starts_from_the_parent_with_its_tokenizer_and_grown_id_rows(world):
    lake, config = world["lake"], world["config"]
    start = choose_start(lake, world["ds"], config)
    plan = prepare_training(lake, world["ds"], config, start=start)
    assert plan.model_version.endswith("-warm") and plan.model_version != model_version_for(world["ds"], config)
    assert (plan.epochs, plan.patience) == (config.train.warm_epochs, config.train.warm_patience)
    assert plan.lr == pytest.approx(config.train.lr * config.train.warm_lr_scale)
    initial = os.path.join(plan.work_dir, "initial")

    # the tokenizer is the parent's, file for file
    with open(os.path.join(initial, "tokenizer.json")) as a, open(os.path.join(world["parent_path"], "tokenizer.json")) as b:
        assert json.load(a) == json.load(b)
    assert load_tokenizer(initial).get_vocab() == load_tokenizer(world["parent_path"]).get_vocab()

    # old items keep the parent's ID rows; items new today have their own rows; today's catalogue
    parent_w, warm_w = load_file(os.path.join(world["parent_path"], "model.safetensors")), load_file(
        os.path.join(initial, "model.safetensors"))
    n_parent, catalog = parent_w[ID_WEIGHT].shape[0], ItemCatalog.load(initial)
    n_today = lake.read("item_features").count()
    assert len(catalog) == n_today > n_parent, "day 5 brought new items"
    assert warm_w[ID_WEIGHT].shape[0] == n_today
    assert torch.equal(warm_w[ID_WEIGHT][:n_parent], parent_w[ID_WEIGHT])
    assert not torch.equal(warm_w[ID_WEIGHT][n_parent:], torch.zeros_like(warm_w[ID_WEIGHT][n_parent:]))
    bias = "item_bias.weight"  # old items keep their learned bias; new items start where a cold retrain would
    counts, eligible = training_target_counts(lake, world["ds"], lake.read("item_features").toPandas()
                                              .sort_values("item_index"))
    logs = torch.log1p(counts)
    cold_start = torch.where(eligible, logs - logs[eligible].mean(), 0.0)
    assert warm_w[bias].shape[0] == n_today and torch.equal(warm_w[bias][:n_parent], parent_w[bias])
    assert torch.allclose(warm_w[bias][n_parent:, 0], cold_start[n_parent:], atol=1e-6)
    for name, tensor in parent_w.items():  # every other weight is the parent's
        if name not in (ID_WEIGHT, bias):
            assert torch.equal(warm_w[name], tensor), name
    assert URM.from_pretrained(initial).config.n_items_trained == n_today

    # it trains on the day's examples the parent never saw (plus a small replay), validates on all of the day's
    import pyarrow.parquet as pq

    assert all(os.path.dirname(f).endswith(WARM_EXAMPLES_DIR) for f in plan.files)
    warm_rows = pq.read_table(plan.files, columns=["split"]).column("split").to_pylist()
    day = lake.read("prompts", ds=world["ds"])
    n_train, n_valid = day.where(F.col("split") == "train").count(), day.where(F.col("split") == "valid").count()
    assert warm_rows.count("valid") == n_valid
    assert start.new_examples <= warm_rows.count("train") < 0.5 * n_train
    # and both ranks get their share of it: DDP steps every rank as many batches as the smallest share has
    collator, index = Collator(load_tokenizer(initial), URM.from_pretrained(initial).config), {
        item: i for i, item in enumerate(catalog.item_ids)}
    shares = [len(ShardStream(plan.files, rank, 2, "train", collator, index)) for rank in range(2)]
    assert sum(shares) == warm_rows.count("train") and min(shares) >= 0.8 * max(shares), shares

    # a rerun of the date names the same version and reuses its folder (so it resumes)
    assert prepare_training(lake, world["ds"], config, start=start).model_version == plan.model_version


@pytest.mark.slow  # the module's parent model is trained in its fixture (minutes)
def test_cold_when_the_cadence_says_so_or_the_model_shape_changed_or_warm_start_is_off(world):
    lake, ds, config = world["lake"], world["ds"], world["config"]
    daily = replace(config, nightly=replace(config.nightly, cold_retrain_every_days=1))
    start = choose_start(lake, ds, daily)
    assert not start.warm and "cold retrain due" in start.reason and world["parent"] in start.reason
    assert choose_start(lake, ds, replace(config, nightly=replace(config.nightly, cold_retrain_every_days=0))).warm

    wider = replace(config, model=replace(config.model, hidden_size=96))
    start = choose_start(lake, ds, wider)
    assert not start.warm and "hidden_size" in start.reason

    start = start_decision(lake, ds, replace(config, train=replace(config.train, warm_start=False)))
    assert not start.warm and start.reason == "train.warm_start is off"
    assert not choose_start(lake, world["parent_ds"], config).warm  # nothing older than the parent's own date


@pytest.mark.slow  # two TorchDistributor runs on the new day, warm and cold (a few minutes on 2 cores)
def test_a_warm_night_nearly_matches_a_cold_retrain_on_far_less_training(world):
    lake, ds, config = world["lake"], world["ds"], world["config"]
    start = choose_start(lake, ds, config)
    warm = run_training(lake, ds, config, start=start)
    row = lake.read(MODELS.name).where(F.col("model_version") == warm["model_version"]).first()
    assert row.parent_version == world["parent"] and row.ds == ds
    assert json.loads(row.metrics_json)["parent_version"] == world["parent"]
    assert resolve_model(lake, warm["model_version"]).n_items_trained == lake.read("item_features").count()

    # the next night counts its cold cadence from the last COLD model (the parent), not the newest (this warm one)
    next_day = (dt.date.fromisoformat(ds) + dt.timedelta(days=1)).isoformat()
    assert newest_model_before(lake, next_day).model_version == warm["model_version"]
    every2 = replace(config, nightly=replace(config.nightly, cold_retrain_every_days=2))
    start = choose_start(lake, next_day, every2)
    assert not start.warm and f"{world['parent']} is 2 day(s) old" in start.reason

    cold = run_training(lake, ds, config, start=Start("the comparison"))
    assert lake.read(MODELS.name).where(F.col("model_version") == cold["model_version"]).first().parent_version is None
    print(f"warm: recall {warm['best_valid_recall']:.4f}, {warm['epochs_run']} epochs, {warm['steps']} steps, "
          f"{warm['train_examples']} examples; cold: recall {cold['best_valid_recall']:.4f}, {cold['epochs_run']} "
          f"epochs, {cold['steps']} steps, {cold['train_examples']} examples")
    assert warm["train_examples"] < 0.5 * cold["train_examples"]
    assert warm["epochs_run"] <= config.train.warm_epochs
    # training time in optimizer steps of the same batch size; the cold run's early stop moves with the seed and
    # the data (a clean clone measured 160 vs 392), so the test asks for half; the 0.3 is a bench figure
    assert warm["steps"] <= 0.5 * cold["steps"]

    # quality on the means of three seeds each (two more in-process runs per side): one seed's best recall on
    # this small valid split spreads too far (warm/cold 0.90 to 1.10 measured) for a single pair to be the test;
    # the bar is 0.9 for the same reason, the 0.95 is a bench figure (scripts/bench_warm_start.py)
    def best_recall(seeded, start: Start) -> float:
        return train_fn(prepare_training(lake, ds, seeded, start=start))["best_valid_recall"]

    warm_recalls, cold_recalls = [warm["best_valid_recall"]], [cold["best_valid_recall"]]
    for seed in (1, 2):
        seeded = replace(config, train=replace(config.train, seed=seed))
        warm_recalls.append(best_recall(seeded, choose_start(lake, ds, seeded)))
        cold_recalls.append(best_recall(seeded, Start("the comparison")))
    print(f"best valid recall by seed: warm {warm_recalls}, cold {cold_recalls}")
    assert sum(warm_recalls) >= 0.9 * sum(cold_recalls)
