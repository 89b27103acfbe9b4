"""Fine-tuning end to end: a real 2-process TorchDistributor run on synthetic data with known tastes."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import functions as F

from recllm.config import load_config
from recllm.data.landing import land_day
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.evaluation.metrics import auc, recall_at_k
from recllm.lake import Lake
from recllm.model.inference import Scorer
from recllm.model.urm import URM, ItemCatalog
from recllm.nightly import land_and_prepare
from recllm.pipeline.features import run_features
from recllm.pipeline.ingest import run_ingest
from recllm.training.checkpoints import load_checkpoint
from recllm.training.driver import prepare_training, run_training, training_target_counts
from recllm.training.loop import INITIAL_DIR, lr_schedule, train_fn, training_autocast
from recllm.training.stream import shard_ranges
from udfs.text import text_embedding_udf

K = 10
EPOCHS = 8
"""The fixture's epoch budget; patience 2 ends it after about 6. With 4 the cosine schedule reached 0 by
epoch 3, and whether a category's fans learned to reach its items (trained or cold) was a trajectory's luck."""


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """Six ingested days (train on 1-4, valid 5, test 6) with features and prompts as of day 6; day 7 landed later."""
    root = tmp_path_factory.mktemp("training")
    lake = Lake(spark, root=str(root / "lake"), backend="deltars")
    days, truth = generate(SyntheticConfig(seed=11, n_users=200, n_items=90, n_days=7, impressions_per_user_day=14))
    config = load_config(overrides={
        "train": {"model_root": str(root / "models"), "epochs": EPOCHS, "patience": 2, "batch_size": 64,
                  "checkpoint_every_steps": 10, "num_processes": 2},
        "prompts": {"history_length": 15},
    })
    embed = text_embedding_udf(config.features.text_encoder, config.features.batch_size)
    ds = land_and_prepare(lake, days[:6], config, embed)
    return {"lake": lake, "config": config, "days": days, "truth": truth, "ds": ds, "embed": embed}


@pytest.fixture(scope="module")
def trained(world):
    result = run_training(world["lake"], world["ds"], world["config"], num_processes=2)
    return result


def _rates(schedule: str, steps: int, total: int, done: int = 0) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = lr_schedule(optimizer, schedule, total, warmup_fraction=0.05, done_steps=done)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_precision_auto_and_fp32_keep_a_cpu_in_fp32_and_bf16_casts_its_matmuls():
    a = torch.ones(4, 4)
    for precision, expected in (("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with training_autocast(precision, use_cuda=False):
            assert (a @ a).dtype == expected, precision


def test_the_cosine_schedule_warms_up_then_decays_to_zero_by_the_last_step():
    rates = _rates("cosine", 200, 200)
    assert rates[0] == 0.0 and rates[10] == pytest.approx(0.01)  # 10 warm-up steps
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11])) and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] < 1e-5 and rates[105] == pytest.approx(0.005, abs=1e-4)


def test_a_resumed_run_continues_on_the_same_learning_rate_curve():
    assert _rates("cosine", 80, 200, done=120) == pytest.approx(_rates("cosine", 200, 200)[120:])


def test_the_constant_schedule_keeps_the_configured_rate():
    assert set(_rates("constant", 60, 50)) == {0.01}


@pytest.mark.parametrize("counts, world", [([36014, 11349], 2), ([5, 0, 7, 1], 3), ([2], 4), ([10, 10], 1)])
def test_ranks_share_the_rows_evenly_and_exactly_once_however_uneven_the_files(counts, world):
    shares = [shard_ranges(counts, rank, world) for rank in range(world)]
    sizes = [sum(n for _, _, n in share) for share in shares]
    assert sum(sizes) == sum(counts) and max(sizes) - min(sizes) <= 1
    covered = sorted((p, first + i) for share in shares for p, first, n in share for i in range(n))
    assert covered == [(p, r) for p, n in enumerate(counts) for r in range(n)]


@pytest.mark.slow  # shares the 2-process TorchDistributor run (minutes)
def test_a_two_process_torchdistributor_run_trains_and_registers_a_model(world, trained):
    assert trained["world_size"] == 2 and trained["device"] == "cpu"
    losses = [h["loss"] for h in trained["history"]]
    assert losses[-1] < losses[0]
    row = world["lake"].read("models").where(F.col("model_version") == trained["model_version"]).first()
    assert row is not None and row.path == trained["path"] and row.data_end_ds == world["ds"]
    assert os.path.exists(os.path.join(trained["path"], "model.safetensors"))
    URM.from_pretrained(trained["path"])


@pytest.mark.slow  # shares the 2-process TorchDistributor run (minutes)
def test_the_model_folder_has_a_card_naming_its_version_data_window_and_metrics_whose_snippet_loads_it(world, trained):
    row = world["lake"].read("models").where(F.col("model_version") == trained["model_version"]).first()
    metrics = json.loads(row.metrics_json)
    card = open(os.path.join(trained["path"], "README.md")).read()

    assert card.startswith(f"# {row.model_version}\n")
    assert row.data_start_ds == world["days"][0].ds and row.data_end_ds == world["ds"]
    assert f"| data window | {row.data_start_ds} .. {row.data_end_ds} " in card
    assert f"Best valid recall@10: **{metrics['best_valid_recall']:.4f}** at epoch {metrics['best_epoch']} " in card
    assert f"{metrics['examples_per_s']:,.0f} examples/s" in card and "peak resident memory" in card
    assert "cold start" in card and set(metrics["objectives"]) >= {"click", "purchase", "ctr"}
    assert all(f"{name} ({n:,} examples)" in card for name, n in metrics["objectives"].items())
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    names: dict = {}
    exec(snippet, names)
    assert names["model"].config.n_items_trained == len(names["catalog"]) == world["lake"].read("item_features").count()


@pytest.mark.slow  # shares the 2-process TorchDistributor run (minutes)
def test_every_file_a_training_run_leaves_is_group_readable_and_none_is_world_writable(trained):
    work = os.path.dirname(trained["path"])  # best/, initial/, checkpoints/ and the version folder itself
    modes = {os.path.relpath(os.path.join(top, name), work): stat.S_IMODE(os.stat(os.path.join(top, name)).st_mode)
             for top, folders, files in os.walk(work) for name in folders + files}
    modes["."] = stat.S_IMODE(os.stat(work).st_mode)

    assert {"best/model.safetensors", "best/catalog.safetensors", "best/README.md",
            "checkpoints/latest/optimizer.safetensors"} <= set(modes)
    folders = {p for p in modes if os.path.isdir(os.path.join(work, p))}
    assert not [p for p in folders if modes[p] & 0o050 != 0o050], "folders the group cannot list and enter"
    assert not [p for p in set(modes) - folders if not modes[p] & 0o040], "files the group cannot read"
    assert not [p for p, mode in modes.items() if mode & 0o002], "world-writable"


def test_item_biases_start_at_the_log_frequency_of_the_training_windows_targets(world, trained):
    lake, ds = world["lake"], world["ds"]
    features = lake.read("item_features").toPandas().sort_values("item_index")
    counts, eligible = training_target_counts(lake, ds, features)
    train = lake.read("prompts", ds=ds).where("split = 'train' AND label IS NULL").toPandas()
    targets = pd.Series([t[0] for t in train.target_item_ids]).value_counts()
    assert counts.tolist() == [float(targets.get(i, 0)) for i in features.item_id]
    landed_in_window = torch.tensor((features.first_seen_ds <= train.cutoff_ts.max().date().isoformat()).to_numpy())
    assert torch.equal(eligible, (counts > 0) | landed_in_window)
    assert eligible.any() and not eligible.all()  # a backfill featurises every item on its last day: no target, no start
    initial = URM.from_pretrained(os.path.join(os.path.dirname(trained["path"]), INITIAL_DIR))
    logs = torch.log1p(counts)
    expected = torch.where(eligible, logs - logs[eligible].mean(), 0.0)
    assert torch.allclose(initial.item_bias.weight[:, 0], expected, atol=1e-6)


def _test_examples(lake, ds, objective):
    rows = (lake.read("prompts", ds=ds).where(F.col("split") == "test").where(F.col("objective") == objective)
            .select("prompt_text", "history_item_ids", "target_item_ids").collect())
    return [r.prompt_text for r in rows], [list(r.history_item_ids) for r in rows], [r.target_item_ids[0] for r in rows]


def _recalls(lake, ds, scorer, objective) -> tuple[float, float, int]:
    """Test Recall@K of the model and of the objective's most popular training targets."""
    prompts, histories, targets = _test_examples(lake, ds, objective)
    ranked, _ = scorer.top_k(scorer.user_vectors(prompts, histories), K)
    target_idx = np.array([scorer.index[t] for t in targets])
    popular = (lake.read("prompts", ds=ds).where(F.col("split") == "train").where(F.col("objective") == objective)
               .select(F.explode("target_item_ids").alias("item_id")).groupBy("item_id").count()
               .orderBy(F.desc("count"), "item_id").limit(K).collect())
    popular = np.array([[scorer.index[r.item_id] for r in popular]] * len(targets))
    return recall_at_k(ranked, target_idx, K), recall_at_k(popular, target_idx, K), len(targets)


@pytest.mark.slow  # shares the 2-process TorchDistributor run (minutes)
def test_the_trained_model_beats_popularity_by_a_wide_margin(world, trained):
    lake, ds = world["lake"], world["ds"]
    scorer = Scorer.load(trained["path"])
    recalls = {o: _recalls(lake, ds, scorer, o) for o in ("click", "purchase", "like", "search", "scenario:home_feed")}
    for objective, (model, popularity, n) in recalls.items():
        print(f"{objective}: recall@{K} model {model:.4f} popularity {popularity:.4f} ({n} test examples)")
    click, click_popularity, n_click = recalls["click"]
    assert n_click > 300
    assert click > 1.2 * click_popularity
    model_mean = np.mean([m for m, _, _ in recalls.values()])
    popularity_mean = np.mean([p for _, p, _ in recalls.values()])
    assert model_mean > 1.8 * popularity_mean


@pytest.mark.slow  # shares the 2-process TorchDistributor run (minutes)
def test_cold_items_reach_users_whose_tastes_match_their_category(world, trained):
    lake, truth, days, config = world["lake"], world["truth"], world["days"], world["config"]
    land_day(lake, days[6])
    run_ingest(lake, days[6].ds, config.ingest)
    run_features(lake, days[6].ds, config.features, world["embed"])
    features = lake.read("item_features").toPandas()
    scorer = Scorer.load(trained["path"], catalog=ItemCatalog.from_features(features))
    n_trained = scorer.model.config.n_items_trained
    cold = [i for i in range(n_trained, len(scorer.catalog))]
    assert cold, "day 7 brought items the model never saw"

    infer = lake.read("prompts", ds=world["ds"]).where("split = 'infer' AND objective = 'click'").collect()
    users = scorer.user_vectors([r.prompt_text for r in infer], [list(r.history_item_ids) for r in infer])
    scores = scorer.model.scores(users, scorer.item_vectors[cold], torch.tensor(cold)).detach().numpy()
    user_index = {u: k for k, u in enumerate(truth.user_ids)}
    item_index = {i: k for k, i in enumerate(truth.item_ids)}
    favourite = np.array([truth.user_taste[user_index[r.user_id]].argmax() for r in infer])
    separations = []  # per cold item: AUC of its score, its category's fans against everyone else
    for c, item in enumerate(cold):
        category = truth.item_category[item_index[scorer.catalog.item_ids[item]]]
        fans = favourite == category
        if fans.any() and (~fans).any():
            separations.append(auc(fans, scores[:, c]))
    print(f"cold items: fans-vs-others AUC per item {np.round(separations, 3).tolist()}")
    assert len(separations) >= 3
    assert np.mean(separations) > 0.65 and np.mean(np.array(separations) > 0.5) >= 0.75


def test_a_run_killed_after_a_checkpoint_resumes_and_finishes(world, tmp_path):
    config = load_config(overrides={
        "train": {"model_root": str(tmp_path / "models"), "epochs": 2, "batch_size": 32,
                  "checkpoint_every_steps": 2, "max_train_examples": 400},
    })
    plan = prepare_training(world["lake"], world["ds"], config)
    latest = os.path.join(plan.work_dir, "checkpoints", "latest", "state.json")
    code = f"import json, sys; from recllm.training.loop import TrainingPlan, train_fn; train_fn(TrainingPlan(**json.load(open({str(tmp_path / 'plan.json')!r}))))"
    (tmp_path / "plan.json").write_text(json.dumps(asdict(plan)))
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "WORLD_SIZE": "1", "RANK": "0"})
    deadline = time.time() + 120
    while not os.path.exists(latest) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert os.path.exists(latest), "the run wrote a checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    result = train_fn(plan)
    assert result["resumed_from_step"] >= 2
    assert result["epochs_run"] == 2
    assert os.path.exists(os.path.join(plan.work_dir, "best", "model.safetensors"))


def test_a_corrupted_checkpoint_is_named_in_the_error(world, tmp_path):
    config = load_config(overrides={"train": {"model_root": str(tmp_path / "models"), "epochs": 1,
                                               "checkpoint_every_steps": 1, "max_train_examples": 64}})
    plan = prepare_training(world["lake"], world["ds"], config)
    train_fn(plan)
    latest = os.path.join(plan.work_dir, "checkpoints", "latest")
    with open(os.path.join(latest, "model.safetensors"), "r+b") as f:
        f.write(b"garbage!")
    model = URM.from_pretrained(os.path.join(plan.work_dir, "initial"))
    import torch

    with pytest.raises(RuntimeError, match=f"checkpoint {latest} is corrupted"):
        load_checkpoint(plan.work_dir, model, torch.optim.AdamW(model.parameters()), "cpu")
    os.remove(os.path.join(latest, "optimizer.safetensors"))
    with pytest.raises(FileNotFoundError, match="missing optimizer.safetensors"):
        load_checkpoint(plan.work_dir, model, torch.optim.AdamW(model.parameters()), "cpu")


def test_batches_cut_to_equal_cost_train_an_epoch_with_as_many_batches_as_equal_rows(world, tmp_path):
    results = {}
    for balance in ("rows", "cost"):
        config = load_config(overrides={"train": {"model_root": str(tmp_path / balance), "epochs": 1,
                                                  "batch_balance": balance, "max_train_examples": 600}})
        results[balance] = train_fn(prepare_training(world["lake"], world["ds"], config))
    assert results["cost"]["steps"] == results["rows"]["steps"] > 0
    rows, cost = (results[b]["history"][0] for b in ("rows", "cost"))
    assert cost["examples_per_s"] > 0 and np.isfinite(cost["loss"])
    assert abs(cost["loss"] - rows["loss"]) < 0.25 * rows["loss"]  # rows weighed alike: the same objective
