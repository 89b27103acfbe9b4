"""What every entry point shares: arguments, logging, the session and lake, clean failure."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable

from recllm.config import ConfigError, RecllmConfig, load_config
from recllm.lake import Lake, check_ds
from recllm.session import build_lake, build_spark

log = logging.getLogger("recllm.jobs")


def parser(description: str, needs_ds: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ds", required=needs_ds, type=_ds, help="run date, YYYY-MM-DD")
    p.add_argument("--config", default=None, help="YAML config (default: the embedded default)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING ...")
    return p


def _ds(value: str) -> str:
    try:
        return check_ds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def open_lake(args: argparse.Namespace) -> tuple[RecllmConfig, Lake]:
    config = load_config(args.config)
    spark = build_spark(config)
    return config, build_lake(spark, config)


def run(name: str, main: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run job `name`'s body with logging; exit 1 with a one-line reason on any failure."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    start = time.time()
    try:
        main(args)
    except (ConfigError, ValueError, LookupError) as e:
        log.error("%s failed: %s", name, e)
        sys.exit(1)
    except Exception:
        log.exception("%s failed", name)
        sys.exit(1)
    log.info("%s finished in %.1fs", name, time.time() - start)
