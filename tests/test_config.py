"""Config: defaults run the embedded lake; malformed files are refused naming the key."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from recllm.config import ConfigError, load_config


def test_no_file_gives_the_embedded_default():
    config = load_config(None)
    assert (config.lake.root, config.lake.backend, config.spark.master) == ("lake", "auto", "local[2]")


def test_the_shipped_default_file_states_the_code_defaults():
    assert asdict(load_config(Path(__file__).parents[1] / "jobs" / "conf" / "default.yaml")) == asdict(load_config())


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "jobs" / "conf").glob("*.yaml"))


def test_the_shipped_config_files_are_found():
    assert {p.name for p in SHIPPED_CONFIGS} >= {"default.yaml", "ml-latest-small.yaml"}


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_file_loads(path):
    assert load_config(path).ingest.rating_max == 5.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("lake:\n  bakend: deltars\n", r"unknown config key\(s\) \['lake.bakend'\]"),
        ("spark:\n  shuffle_partitions: many\n", "config key spark.shuffle_partitions: expected int"),
        ("ingest:\n  rating_max: [5]\n", "config key ingest.rating_max: expected float"),
        ("lake: 3\n", "lake: expected a mapping"),
        ("lake: [\n", "is not valid YAML"),
        ("trainer: {}\n", r"unknown config key\(s\) \['trainer'\]"),
        ("train: {epochs: 0}\n", r"train\.epochs must be at least 1, got 0"),
        ("train: {epochs: -3}\n", r"train\.epochs must be at least 1, got -3"),
        ("train: {batch_size: 0}\n", r"train\.batch_size must be at least 1"),
        ("train: {num_processes: 0}\n", r"train\.num_processes must be at least 1"),
        ("train: {lr: 0}\n", r"train\.lr must be greater than 0"),
        ("train: {lr: .nan}\n", r"train\.lr must be a finite number"),
        ("train: {seed: -1}\n", r"train\.seed must be at least 0"),
        ("score: {top_k: 0}\n", r"score\.top_k must be at least 1"),
        ("score: {batch_size: -5}\n", r"score\.batch_size must be at least 1"),
        ("prompts: {history_length: 0}\n", r"prompts\.history_length must be at least 1"),
        ("prompts: {max_lookback_events: -1}\n", r"prompts\.max_lookback_events must be at least 1"),
        ("prompts: {test_days: -1}\n", r"prompts\.test_days must be at least 0"),
        ("features: {batch_size: 0}\n", r"features\.batch_size must be at least 1"),
        ("model: {n_query_tokens: 0}\n", r"model\.n_query_tokens must be at least 1"),
        ("model: {id_dropout: 1.5}\n", r"model\.id_dropout must be at most 1"),
        ("nightly: {retrain_every_days: 0}\n", r"nightly\.retrain_every_days must be at least 1"),
        ("ingest: {rating_min: 5, rating_max: 1}\n", r"ingest\.rating_min .* must not exceed ingest\.rating_max"),
        ("ingest: {earliest_ts: '1990-02-30'}\n", r"ingest\.earliest_ts must be a real calendar date as YYYY-MM-DD"),
        ("ingest: {earliest_ts: 'last year'}\n", r"ingest\.earliest_ts must be a real calendar date"),
        ("prompts: {split: random}\n", r"prompts\.split must be one of \['time', 'leave_last_out'\], got 'random'"),
        ("lake: {backend: sqlite}\n", r"lake\.backend must be one of \['auto', 'deltars', 'native'\]"),
        ("score: {device: tpu}\n", r"score\.device must be one of \['auto', 'cpu', 'cuda'\]"),
        ("train: {use_gpu: maybe}\n", r"train\.use_gpu must be one of \['auto', 'true', 'false'\]"),
        ("lake: {root: ''}\n", r"lake\.root must not be empty"),
        ("lake: 0\n", r"lake: expected a mapping, got int"),
        ("lake: false\n", r"lake: expected a mapping, got bool"),
        ("lake: ''\n", r"lake: expected a mapping, got str"),
        ("lake: []\n", r"lake: expected a mapping, got list"),
        ("- lake\n- spark\n", r"top level must be a mapping of sections.*got list"),
        ("[]\n", r"top level must be a mapping of sections.*got list"),
        ("0\n", r"top level must be a mapping of sections.*got int"),
        ("just words\n", r"top level must be a mapping of sections.*got str"),
        ("train: {epochs: 2, epochs: 3}\n", r"train\.epochs is given twice"),
        ("train: {1: 2}\n", r"unknown config key\(s\) \['train\.1'\]"),
    ],
)
def test_malformed_config_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_an_unquoted_date_setting_reads_as_its_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ingest:\n  earliest_ts: 2000-01-01\n")
    assert load_config(path).ingest.earliest_ts == "2000-01-01"
