"""What every entry point shares: arguments, logging, the session and lake, the executor functions, clean failure."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable

from recllm.config import ConfigError, RecllmConfig, load_config
from recllm.data.synthetic import SyntheticConfig
from recllm.lake import Lake, check_ds
from recllm.nightly import StageFunctions
from recllm.scoring.stage import ScoringFunctions
from recllm.session import build_lake, build_spark

log = logging.getLogger("recllm.jobs")


def parser(description: str, needs_ds: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ds", required=needs_ds, type=_ds, help="run date, YYYY-MM-DD")
    p.add_argument("--config", default=None, help="YAML config (default: the embedded default)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING ...")
    return p


def add_synthetic_args(p: argparse.ArgumentParser, days: int) -> None:
    """The synthetic shop's options (`jobs.land --source synthetic`, `jobs.demo`)."""
    p.add_argument("--days", type=int, default=days, help="synthetic: consecutive days from --ds")
    p.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    p.add_argument("--users", type=int, default=SyntheticConfig.n_users)
    p.add_argument("--items", type=int, default=SyntheticConfig.n_items)
    p.add_argument("--bad-row-fraction", type=float, default=SyntheticConfig.bad_row_fraction)


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    """The generator's settings from `add_synthetic_args`' options, starting at --ds when given."""
    return SyntheticConfig(seed=args.seed, n_users=args.users, n_items=args.items, n_days=args.days,
                           start_ds=args.ds or SyntheticConfig.start_ds, bad_row_fraction=args.bad_row_fraction)


def _ds(value: str) -> str:
    """The run date, checked once here where it enters; the stages take it as valid."""
    try:
        return check_ds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def open_lake(args: argparse.Namespace, config: RecllmConfig | None = None) -> tuple[RecllmConfig, Lake]:
    """The job's config (`--config`, unless given) with a Spark session and the lake it names."""
    config = config or load_config(args.config)
    spark = build_spark(config)
    return config, build_lake(spark, config)


def embedding_udf(config: RecllmConfig):
    """The features stage's text embedding UDF for `features.text_encoder`."""
    from udfs.text import text_embedding_udf

    return text_embedding_udf(config.features.text_encoder, config.features.batch_size)


def scoring_functions() -> ScoringFunctions:
    """Scoring's executor functions (`udfs.scoring`)."""
    from udfs.scoring import candidates_fn, ctr_fn

    return ScoringFunctions(candidates=candidates_fn, ctr=ctr_fn)


def stage_functions(config: RecllmConfig) -> StageFunctions:
    """Every executor function the nightly stages take."""
    return StageFunctions(embed=embedding_udf(config), scoring=scoring_functions())


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
