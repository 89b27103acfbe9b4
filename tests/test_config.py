"""Config: defaults run the embedded lake; malformed files are refused naming the key."""

from __future__ import annotations

import pytest

from recllm.config import ConfigError, load_config


def test_no_file_gives_the_embedded_default():
    config = load_config(None)
    assert (config.lake.root, config.lake.backend, config.spark.master) == ("lake", "auto", "local[2]")


def test_the_shipped_default_file_loads(tmp_path):
    config = load_config("jobs/conf/default.yaml")
    assert config.ingest.rating_max == 5.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("lake:\n  bakend: deltars\n", r"unknown config key\(s\) \['lake.bakend'\]"),
        ("spark:\n  shuffle_partitions: many\n", "config key spark.shuffle_partitions: expected int"),
        ("ingest:\n  rating_max: [5]\n", "config key ingest.rating_max: expected float"),
        ("lake: 3\n", "lake: expected a mapping"),
        ("lake: [\n", "is not valid YAML"),
        ("trainer: {}\n", r"unknown config key\(s\) \['trainer'\]"),
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
