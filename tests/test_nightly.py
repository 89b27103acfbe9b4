"""Every night the scheduler runs train, score and evaluate, and each does the right thing for the night:
nothing (exit 0) without enough history or without a model, train when the nightly policy says so, else reuse."""

from __future__ import annotations

import logging

import pytest

from jobs import evaluate, score, train
from recllm.config import load_config
from recllm.data.synthetic import SyntheticConfig, generate
from recllm.lake import Lake
from recllm.nightly import land_and_prepare
from tests.helpers import hashed_text_embedding, small_demo_config


def _night(spark, root, n_days: int) -> dict:
    """A lake whose first `n_days` synthetic days are ingested, with features and prompts as of the last;
    its config (the small demo's: a tiny model, one training process, one short epoch) under `root`."""
    config_path = small_demo_config(root, num_processes=1, epochs=1, max_train_examples=128)
    config = load_config(config_path)
    lake = Lake(spark, root=str(root / "lake"), backend="deltars")
    days, _ = generate(SyntheticConfig(seed=4, n_users=30, n_items=40, n_days=n_days))
    ds = land_and_prepare(lake, days, config, hashed_text_embedding)
    return {"lake": lake, "ds": ds, "args": ["--ds", ds, "--config", config_path]}


@pytest.fixture(scope="module")
def first_night(spark, tmp_path_factory):
    """One day of data: every example is a test example, none to train or validate on."""
    return _night(spark, tmp_path_factory.mktemp("first_night"), 1)


@pytest.fixture(scope="module")
def third_night(spark, tmp_path_factory):
    """Three days (train on the first, validate on the second), trained once by `jobs.train --when-due`."""
    night = _night(spark, tmp_path_factory.mktemp("third_night"), 3)
    with _logged() as lines:
        train.cli([*night["args"], "--when-due"])
    return {**night, "logged": lines}


class _logged:
    """The messages recllm logs inside the block (a module fixture cannot use caplog)."""

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        self.handler = logging.Handler(logging.INFO)
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        self.logger = logging.getLogger("recllm")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        return self.lines

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def test_train_when_due_on_a_night_without_enough_history_says_so_writes_nothing_and_exits_0(first_night):
    with _logged() as lines:
        train.cli([*first_night["args"], "--when-due"])  # exit 1 would raise SystemExit

    assert any("nothing trained: not enough history yet (train=0, valid=0 examples)" in line for line in lines), lines
    assert not first_night["lake"].exists("models")


def test_score_and_evaluate_on_a_night_with_no_model_yet_skip_and_exit_0(first_night):
    with _logged() as lines:
        score.cli(first_night["args"])
        evaluate.cli(first_night["args"])

    ds = first_night["ds"]
    assert f"score ds={ds}: no model yet: skipped" in "\n".join(lines)
    assert f"evaluate ds={ds}: no model yet: skipped" in "\n".join(lines)
    assert not any(first_night["lake"].exists(t) for t in ("candidates", "ctr_scores", "cold_start_fills", "metrics"))


def test_a_named_model_version_that_is_not_registered_still_fails_on_a_first_night(first_night):
    with pytest.raises(SystemExit) as exit_:
        score.cli([*first_night["args"], "--model-version", "urm-2026-01-01-00000000"])

    assert exit_.value.code == 1


@pytest.mark.slow  # the one (tiny, one-process) TorchDistributor run of this module
def test_train_when_due_trains_cold_and_registers_a_model_on_a_night_the_policy_says_train(third_night):
    rows = third_night["lake"].read("models").collect()

    assert len(rows) == 1 and rows[0].ds == third_night["ds"] and rows[0].parent_version is None
    said = "\n".join(third_night["logged"])
    assert "training (no model yet); cold start: no model of an earlier date to start from" in said
    assert f"model {rows[0].model_version}: best valid recall@10" in said


@pytest.mark.slow  # needs the trained lake
def test_train_when_due_reuses_a_model_younger_than_the_retrain_interval_and_writes_nothing(third_night):
    lake = third_night["lake"]
    version, table_version = lake.read("models").first().model_version, lake.version("models")

    with _logged() as lines:
        train.cli([*third_night["args"], "--when-due"])

    assert any(f"nothing trained: reusing {version} (0 day(s) old, retrain every 1)" in line for line in lines), lines
    assert lake.version("models") == table_version
