"""Nightly scoring end to end: a tiny trained model scores a day of a synthetic lake through the pandas UDFs.

Day 1 trains the model; day 2 brings new items and users and is scored. Every written
value is checked against a plain PyTorch computation over the same model, catalogue and
prompts (no Scorer, no Spark).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from chispa import assert_df_equality
from pyspark.sql import functions as F

from jobs import score as score_job
from jobs.common import scoring_functions
from recllm.config import ConfigError, load_config
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.model.batching import Collator
from recllm.model.urm import URM, ItemCatalog, load_tokenizer
from recllm.pipeline.features import run_features
from recllm.pipeline.ingest import run_ingest
from recllm.pipeline.objectives import DEFAULT_OBJECTIVES
from recllm.pipeline.prompts import run_prompts
from recllm.registry import ModelNotFoundError, register_model
from recllm.scoring.batch import LOADS, WorkerSpec, get_scorer
from recllm.scoring.stage import check_score_config, run_scoring, write_catalog_snapshot
from recllm.training.driver import prepare_training
from recllm.training.loop import train_fn
from tests.helpers import hashed_text_embedding

DS1, DS2, EMPTY_DS = "2026-01-01", "2026-01-02", "2026-01-03"
K, CTR_TOP_N, COLD_USERS, NEW_USER_K = 8, 3, 5, 6
TABLES = ("candidates", "ctr_scores", "cold_start_fills")
ATOL = 1e-5


def _overrides(root) -> dict:
    return {
        "train": {"model_root": str(root / "models"), "epochs": 1, "max_train_examples": 200, "batch_size": 64},
        "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 500},
        "prompts": {"valid_days": 0, "test_days": 0},
        "score": {"top_k": K, "ctr_top_n": CTR_TOP_N, "cold_item_users": COLD_USERS, "new_user_k": NEW_USER_K,
                  "batch_size": 16, "chunk_size": 20, "work_root": str(root / "scoring"),
                  "requests_table": str(root / "requests")},
    }


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Day 1 ingested, featurised and trained on; day 2 (new items and users) landed after training."""
    root = tmp_path_factory.mktemp("scoring")
    lake = Lake(spark, root=str(root / "lake"), backend="deltars")
    config = load_config(overrides=_overrides(root))
    days, _ = generate(SyntheticConfig(seed=5, n_users=40, n_items=50, n_days=2))
    embed = hashed_text_embedding
    land_day(lake, days[0])
    run_ingest(lake, DS1, config.ingest)
    run_features(lake, DS1, config.features, embed)
    run_prompts(lake, DS1, config.prompts)
    plan = prepare_training(lake, DS1, config)
    result = train_fn(plan)
    register_model(lake, DS1, config, plan.model_version, f"{plan.work_dir}/best", result)
    land_day(lake, days[1])
    run_ingest(lake, DS2, config.ingest)
    run_features(lake, DS2, config.features, embed)
    run_prompts(lake, DS2, config.prompts)
    user = lake.read("prompts", ds=DS2).where("split = 'infer'").select("user_id").first()["user_id"]
    spark.createDataFrame(
        [(user, "i00001", "search", DS2), ("u_nobody", "i00002", "home_feed", DS2),
         (user, "no_such_item", "home_feed", DS2), (user, "i00003", "search", "2025-12-31")],
        "user_id string, item_id string, scenario string, ds string",
    ).write.parquet(str(root / "requests"))
    return {"lake": lake, "config": config, "root": root, "model_version": plan.model_version,
            "model_path": f"{plan.work_dir}/best", "requested_user": user}


@pytest.fixture(scope="module")
def scored(world):
    report = run_scoring(world["lake"], DS2, world["config"], scoring_functions())
    return report


@pytest.fixture(scope="module")
def plain(world):
    """The model, catalogue, prompts and purchases of day 2, read without any scoring code."""
    lake = world["lake"]
    model = URM.from_pretrained(world["model_path"])
    collator = Collator(load_tokenizer(world["model_path"]), model.config)
    features = lake.read("item_features").toPandas()
    catalog = ItemCatalog.from_features(features)
    index = {item_id: i for i, item_id in enumerate(catalog.item_ids)}
    infer = (lake.read("prompts", ds=DS2).where("split = 'infer' AND objective != 'ctr'")
             .select("objective", "user_id", "prompt_text", "history_item_ids").toPandas())
    bought = {}
    for r in lake.read("events").where(f"ds <= '{DS2}' AND event_type = 'purchase'").collect():
        bought.setdefault(r.user_id, set()).add(r.item_id)
    with torch.no_grad():
        items = model.item_vectors(catalog)

    def users(prompts, histories):
        with torch.no_grad():
            batch = collator(collator.tokenize(list(prompts)), [[index[i] for i in h] for h in histories])
            return model.encode(batch, catalog)[0]

    def top_k(prompts, histories, user_ids, k):
        with torch.no_grad():
            sim = model.scores(users(prompts, histories), items, torch.arange(len(items))) / model.log_scale.exp()  # the tables' score
        for row, u in enumerate(user_ids):
            for item_id in bought.get(u, ()):
                sim[row, index[item_id]] = -float("inf")
        s, i = sim.topk(k, dim=1)
        return s.numpy(), i.numpy()

    return {"model": model, "catalog": catalog, "index": index, "items": items, "infer": infer, "bought": bought,
            "features": features, "users": users, "top_k": top_k}


def _ranked(df, key_cols):
    out = {}
    for r in df.orderBy(*key_cols, "rank").collect():
        out.setdefault(tuple(r[c] for c in key_cols), []).append((r.item_id, r.score))
    return out


def _assert_same_top_k(expected: list[tuple[str, float]], actual: list[tuple[str, float]], what):
    assert len(actual) == len(expected), what
    np.testing.assert_allclose([s for _, s in actual], [s for _, s in expected], atol=ATOL, err_msg=str(what))
    exp_score = dict(expected)
    for (e_id, e_s), (a_id, _) in zip(expected, actual):
        # same item at every rank, except two items whose scores tie within float error
        assert e_id == a_id or abs(e_s - exp_score.get(a_id, np.inf)) < ATOL, (what, expected, actual)


def test_candidates_equal_a_plain_pytorch_top_k_over_the_same_model_and_items(world, scored, plain):
    infer = plain["infer"]
    scores, idx = plain["top_k"](infer.prompt_text, infer.history_item_ids, infer.user_id, K)
    ids = plain["catalog"].item_ids
    expected = {(o, u): [(ids[i], float(s)) for i, s in zip(idx[r], scores[r]) if np.isfinite(s)]
                for r, (o, u) in enumerate(zip(infer.objective, infer.user_id))}
    actual = _ranked(world["lake"].read("candidates", ds=DS2), ["objective", "user_id"])
    assert set(actual) == set(expected) and len(expected) > 200
    for key in expected:
        _assert_same_top_k(expected[key], actual[key], key)
    rows = world["lake"].read("candidates", ds=DS2)
    assert rows.count() == scored.candidates == sum(len(v) for v in expected.values())
    assert {r.model_version for r in rows.select("model_version").distinct().collect()} == {world["model_version"]}


def test_items_a_user_bought_are_never_their_candidates_or_fills(world, scored, plain):
    lake = world["lake"]
    purchases = lake.read("events").where(f"ds <= '{DS2}' AND event_type = 'purchase'").select("user_id", "item_id")
    assert purchases.count() > 0
    for table in ("candidates", "cold_start_fills"):
        assert lake.read(table, ds=DS2).join(purchases, ["user_id", "item_id"]).count() == 0


def test_ctr_scores_are_probabilities_of_the_ctr_prompt_one_row_per_pair(world, scored, plain):
    lake = world["lake"]
    ctr = lake.read("ctr_scores", ds=DS2)
    rows = ctr.toPandas()
    assert len(rows) == scored.ctr_scores > 0
    assert ((rows.p_click > 0) & (rows.p_click < 1)).all()
    assert not rows.duplicated(["user_id", "item_id", "scenario"]).any()
    top = lake.read("candidates", ds=DS2).where(f"rank <= {CTR_TOP_N}").select("user_id", "item_id").distinct()
    assert top.join(ctr, ["user_id", "item_id"], "left_anti").count() == 0, "every top candidate pair has a p_click"
    pairs = set(zip(rows.user_id, rows.item_id, rows.scenario))
    user = world["requested_user"]
    assert (user, "i00001", "search") in pairs and ("u_nobody", "i00002", "home_feed") in pairs
    assert (user, "i00003", "search") not in pairs, "requests of another ds are not scored"
    assert not (rows.item_id == "no_such_item").any()

    # the same probabilities from the prompt CTR training examples had: the ctr instruction and the pair's scenario
    ctr_text = next(o.instruction for o in DEFAULT_OBJECTIVES if o.name == "ctr")
    click_text = next(o.instruction for o in DEFAULT_OBJECTIVES if o.name == "click")
    click = plain["infer"].query("objective == 'click'").set_index("user_id")
    known = rows[rows.user_id.isin(click.index)]
    prompts = [re.sub(r"Scenario: [^.]*\.", f"Scenario: {s}.", click.prompt_text[u].replace(click_text, ctr_text, 1),
                      count=1) for u, s in zip(known.user_id, known.scenario)]
    with torch.no_grad():
        histories = [click.history_item_ids[u] for u in known.user_id]
        users = plain["users"](prompts, histories)
        shown = torch.tensor([plain["index"][i] for i in known.item_id])
        history = torch.stack([plain["items"][[plain["index"][i] for i in h]].mean(dim=0) for h in histories])
        text = None
        if plain["model"].config.ctr_text_history:
            slots = torch.tensor([plain["index"][i] for h in histories for i in h])
            rows = torch.tensor([r for r, h in enumerate(histories) for _ in h])
            text = URM.text_affinity(plain["catalog"], slots, rows, shown)
        expected = plain["model"].click_probability(users, plain["items"][shown], history, shown, text).numpy()
    np.testing.assert_allclose(known.p_click.to_numpy(), expected, atol=ATOL)


def test_new_items_are_placed_with_the_users_most_likely_to_want_them(world, scored, plain):
    features = plain["features"]
    n_trained = plain["model"].config.n_items_trained
    new = features[(features.first_seen_ds == DS2) & (features.item_index >= n_trained)].item_id.tolist()
    assert new and scored.new_items == len(new)
    fills = world["lake"].read("cold_start_fills", ds=DS2).where("reason = 'new_item'").toPandas()
    assert set(fills.item_id) == set(new)
    assert not fills.duplicated(["user_id", "rank"]).any()
    click = plain["infer"].query("objective == 'click'").reset_index(drop=True)
    with torch.no_grad():
        model = plain["model"]
        new_index = torch.tensor([plain["index"][i] for i in new])
        sim = (model.scores(plain["users"](click.prompt_text, click.history_item_ids), plain["items"][new_index], new_index)
               / model.log_scale.exp()).numpy()
    for j, item in enumerate(new):
        s = np.array([-np.inf if item in plain["bought"].get(u, ()) else v for u, v in zip(click.user_id, sim[:, j])])
        best = np.argsort(-s, kind="stable")[:COLD_USERS]
        got = fills[fills.item_id == item].sort_values("score", ascending=False)
        assert set(got.user_id) == set(click.user_id[best]), item
        np.testing.assert_allclose(got.score.to_numpy(), s[best], atol=ATOL)


def test_new_users_get_fills_from_profile_and_objective_text_alone(world, scored, plain):
    lake = world["lake"]
    first = lake.read("events").groupBy("user_id").agg(F.min("ds").alias("first")).where(f"first = '{DS2}'")
    new_users = sorted(r.user_id for r in first.collect())
    assert new_users and scored.new_users >= len(new_users)
    fills = lake.read("cold_start_fills", ds=DS2).where("reason = 'new_user'")
    got = _ranked(fills.where(F.col("user_id").isin(new_users)), ["user_id"])
    assert sorted(u for (u,) in got) == new_users
    click = plain["infer"].query("objective == 'click'").set_index("user_id")
    # the user's click prompt with its history replaced by "none"
    prompts = [click.prompt_text[u][:click.prompt_text[u].index(". History: ")] + ". History: none" for u in new_users]
    scores, idx = plain["top_k"](prompts, [[] for _ in new_users], new_users, NEW_USER_K)
    ids = plain["catalog"].item_ids
    for r, u in enumerate(new_users):
        _assert_same_top_k([(ids[i], float(s)) for i, s in zip(idx[r], scores[r])], got[(u,)], u)


def test_rerunning_a_day_from_the_command_line_leaves_one_copy_of_each_row(world, scored, tmp_path, caplog):
    lake, root = world["lake"], world["root"]
    before = {t: lake.version(t) for t in TABLES}
    config = tmp_path / "recllm.yaml"
    score = "\n".join(f"  {k}: {v}" for k, v in _overrides(root)["score"].items())
    config.write_text(f"lake:\n  root: {lake.root}\n  backend: deltars\nprompts:\n  valid_days: 0\n  test_days: 0\n"
                      f"score:\n{score}\n")
    with caplog.at_level(logging.INFO):
        score_job.cli(["--ds", DS2, "--config", str(config), "--model-version", world["model_version"]])
    assert f"candidates={scored.candidates} ctr_scores={scored.ctr_scores}" in caplog.text
    for table in TABLES:
        assert lake.version(table) == before[table] + 1
        now, then = lake.read(table, ds=DS2), lake.read(table, version=before[table], ds=DS2)
        assert now.count() == then.count() > 0
        assert_df_equality(now, then, ignore_row_order=True, ignore_nullable=True)
        keys = [k for k in lake.contract(table).keys]
        assert now.groupBy(*keys).count().where("count > 1").count() == 0


def test_an_unknown_model_version_fails_clearly_and_writes_nothing(world, scored, caplog):
    lake = world["lake"]
    before = {t: lake.version(t) for t in TABLES}
    with pytest.raises(ModelNotFoundError, match=r"model version 'nope' not found in models; known: \['urm-"):
        run_scoring(lake, DS2, world["config"], scoring_functions(), model_version="nope")
    config = world["root"] / "bad-version.yaml"
    config.write_text(f"lake:\n  root: {lake.root}\n  backend: deltars\n")
    with pytest.raises(SystemExit) as exit_:
        score_job.cli(["--ds", DS2, "--config", str(config), "--model-version", "nope"])
    assert exit_.value.code == 1 and "score failed: model version 'nope' not found in models" in caplog.text
    assert {t: lake.version(t) for t in TABLES} == before


def test_a_day_without_prompts_writes_empty_partitions(world, scored, caplog):
    lake = world["lake"]
    with caplog.at_level(logging.WARNING):
        report = run_scoring(lake, EMPTY_DS, world["config"], scoring_functions())
    assert report.empty_day and report.candidates == report.ctr_scores == report.cold_start_fills == 0
    assert "no inference rows for ds=2026-01-03" in caplog.text
    for table in TABLES:
        assert lake.read(table, ds=EMPTY_DS).count() == 0
        assert lake.read(table, ds=DS2).count() > 0


def _probe(spec):
    """A mapInPandas function reporting, per task, its worker's pid, scorer loads and torch threads."""

    def probe(batches):
        import os as _os

        import pandas as _pd
        import torch as _torch

        from recllm.scoring.batch import LOADS as loads
        from udfs.scoring import _worker_scorer

        for pdf in batches:
            scorer = _worker_scorer(spec)
            yield _pd.DataFrame({"pid": [_os.getpid()], "loads": [loads["count"]], "threads": [_torch.get_num_threads()],
                                 "scorer": [id(scorer)], "items": [len(scorer.catalog)]})

    return probe


def test_each_python_worker_loads_the_model_once_with_the_configured_threads(world, spark, plain, tmp_path):
    import sys

    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = WorkerSpec(model_dir=world["model_path"], catalog_dir=write_catalog_snapshot(plain["catalog"], str(tmp_path / "c")),
                      device="cpu", torch_threads=1, batch_size=16, chunk_size=20)
    tasks = spark.range(0, 6, numPartitions=6)
    rows = [r for _ in range(2) for r in tasks.mapInPandas(
        _probe(spec), "pid long, loads long, threads int, scorer long, items int").collect()]
    assert len(rows) == 12 and {r.items for r in rows} == {len(plain["catalog"])} and {r.threads for r in rows} == {1}
    by_worker = {}
    for r in rows:
        by_worker.setdefault(r.pid, set()).add((r.loads, r.scorer))
    assert len(by_worker) < len(rows), "Spark reused its Python workers"
    assert all(len(seen) == 1 for seen in by_worker.values()), f"a worker loaded the scorer twice: {by_worker}"

    loads = LOADS["count"]  # and in this process
    first = get_scorer(spec.model_dir, spec.catalog_dir)
    assert get_scorer(spec.model_dir, spec.catalog_dir) is first and LOADS["count"] == loads + 1


@pytest.mark.parametrize("key, value, message", [
    ("device", "tpu", "score.device must be one of"),
    ("top_k", 0, "score.top_k must be at least 1"),
    ("cold_objective", "ctr", "score.cold_objective 'ctr' is not an enabled retrieval objective"),
    ("cold_objective", "search", "query-aware"),
    ("requests_table", "requests; DROP TABLE x", "score.requests_table part must match"),
])
def test_bad_score_settings_are_refused_naming_the_key(key, value, message):
    config = load_config(overrides={"score": {key: value}})
    with pytest.raises((ConfigError, ValueError), match=message):
        check_score_config(config.score, config.prompts)
