"""Shared fixtures: one real local Spark session for the run, a fresh lake per test, the small
demo run once, a tiny tokenizer. Plain helpers live in `tests/helpers.py`."""

from __future__ import annotations

import time

import pytest

from recllm.config import load_config
from recllm.lake import Lake
from recllm.session import build_spark
from tests.helpers import DEMO_ARGS, DemoRun, small_demo_config


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
    """Whatever runs the demo is slow: mark `slow` every test that needs `small_demo`."""
    for item in items:
        if "small_demo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def spark():
    config = load_config(overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2, "app_name": "recllm-tests"}})
    session = build_spark(config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def small_demo(spark, tmp_path_factory) -> DemoRun:
    """The demo at a small size on the local session, run once."""
    import contextlib
    import io

    from jobs import demo

    root = tmp_path_factory.mktemp("demo")
    config = small_demo_config(root)
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        demo.cli(["--config", config, *DEMO_ARGS, "--log-level", "WARNING"])
    return DemoRun(root, printed.getvalue(), time.perf_counter() - start)


@pytest.fixture
def lake(spark, tmp_path) -> Lake:
    return Lake(spark, root=str(tmp_path / "lake"), backend="deltars")


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level BPE tokenizer with the model's control tokens, trained on prompt-like text."""
    from recllm.model.backbone import train_tokenizer

    corpus = ["Recommend items this user will click next. History: clicked <|item|> bought <|item|>"] * 20
    corpus += ["liked <|item|> searched for shoes", "trail running shoes", "science fiction novel"] * 20
    return train_tokenizer(corpus, 300)
