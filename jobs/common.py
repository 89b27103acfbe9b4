"""What every entry point shares: arguments, logging, the session and lake, the executor functions, clean failure."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable

from typing import TYPE_CHECKING

from recllm.config import ConfigError, load_config
from recllm.lake.base import check_ds, run_date

if TYPE_CHECKING:  # the heavy modules (torch, Spark) load only once the arguments are checked
    from recllm.config import RecllmConfig
    from recllm.data.synthetic import SyntheticConfig
    from recllm.lake import Lake
    from recllm.nightly import StageFunctions
    from recllm.scoring.stage import ScoringFunctions

log = logging.getLogger("recllm.jobs")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JobArgumentParser(argparse.ArgumentParser):
    """argparse that answers a bad argument in one line (no usage block), exit status 2; resolves the run date
    (`--ds`, else the day before `--day-before`) into `args.ds`."""

    ds_required: bool = False

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if hasattr(namespace, "day_before"):
            namespace.ds = run_date(namespace.ds, namespace.day_before)
            if namespace.ds is None and self.ds_required:
                self.error("the run date is required: --ds YYYY-MM-DD or --day-before YYYY-MM-DD")
        return namespace, extras


def parser(
    description: str, needs_ds: bool | None = True, *, job: str | None = None, ds_help: str | None = None
) -> argparse.ArgumentParser:
    """The options every job takes, for job `job` (its usage reads `recllm <job>`); each is checked here, before
    any Spark session or model loads. `needs_ds`: None for a job that takes no --ds; `ds_help` says what an
    optional --ds defaults to."""
    p = JobArgumentParser(prog=f"recllm {job}" if job else None, description=description)
    if needs_ds is not None:
        p.ds_required = bool(needs_ds)
        ds_said = "run date (required, or --day-before)" if needs_ds else (ds_help or "run date (optional)")
        p.add_argument("--ds", type=_ds_or_unset, metavar="YYYY-MM-DD",
                       help=f"{ds_said}; an empty value counts as not given")
        p.add_argument("--day-before", type=_ds, metavar="YYYY-MM-DD",
                       help="a scheduler's trigger date: the run date is the day before it, the day the nightly "
                       "schedule's data interval covers; a non-empty --ds takes precedence (default: none)")
    p.add_argument("--config", default=None, type=existing_file, metavar="FILE",
                   help="YAML config file (default: the embedded default config)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help=f"logging level, one of {', '.join(LOG_LEVELS)} (default: %(default)s)")
    return p


def existing_file(value: str) -> str:
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"no such file: {value!r}")
    return value


def existing_folder(value: str) -> str:
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"no such folder: {value!r}")
    return value


def add_synthetic_args(p: argparse.ArgumentParser, days: int) -> None:
    """The synthetic shop's options (`jobs.land --source synthetic`, `jobs.demo`)."""
    from recllm.data.synthetic import SyntheticConfig

    p.add_argument("--days", type=int, default=days,
                   help="synthetic: how many consecutive days to generate from --ds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SyntheticConfig.seed,
                   help="synthetic: random seed; the same seed generates the same shop (default: %(default)s)")
    p.add_argument("--users", type=int, default=SyntheticConfig.n_users,
                   help="synthetic: number of users on the first day (default: %(default)s)")
    p.add_argument("--items", type=int, default=SyntheticConfig.n_items,
                   help="synthetic: number of catalogue items on the first day (default: %(default)s)")
    p.add_argument("--bad-row-fraction", type=float, default=SyntheticConfig.bad_row_fraction,
                   help="synthetic: share of deliberately bad raw rows, for ingest to quarantine (default: %(default)s)")


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    """The generator's settings from `add_synthetic_args`' options, starting at --ds when given."""
    from recllm.data.synthetic import SyntheticConfig

    return SyntheticConfig(seed=args.seed, n_users=args.users, n_items=args.items, n_days=args.days,
                           start_ds=args.ds or SyntheticConfig.start_ds, bad_row_fraction=args.bad_row_fraction)


def _ds(value: str) -> str:
    """The run date, checked once here where it enters; the stages take it as valid."""
    try:
        return check_ds(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ds_or_unset(value: str) -> str | None:
    """`--ds`: a date as `_ds` checks it, or empty for not given (a scheduler's unset parameter)."""
    return None if value == "" else _ds(value)


def open_lake(args: argparse.Namespace, config: RecllmConfig | None = None) -> tuple[RecllmConfig, Lake]:
    """The job's config (`--config`, unless given) with a Spark session and the lake it names."""
    from recllm.session import build_lake, build_spark

    config = config or load_config(args.config)
    spark = build_spark(config)
    return config, build_lake(spark, config)


def embedding_udf(config: RecllmConfig):
    """The features stage's text embedding UDF for `features.text_encoder`."""
    from udfs.text import text_embedding_udf

    return text_embedding_udf(config.features.text_encoder, config.features.batch_size)


def scoring_functions() -> ScoringFunctions:
    """Scoring's executor functions (`udfs.scoring`)."""
    from recllm.scoring.stage import ScoringFunctions
    from udfs.scoring import candidates_fn, ctr_fn

    return ScoringFunctions(candidates=candidates_fn, ctr=ctr_fn)


def stage_functions(config: RecllmConfig) -> StageFunctions:
    """Every executor function the nightly stages take."""
    from recllm.nightly import StageFunctions

    return StageFunctions(embed=embedding_udf(config), scoring=scoring_functions())


def run(name: str, main: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run job `name`'s body with logging; exit 1 with a one-line reason on any failure."""
    logging.basicConfig(
        level=getattr(logging, args.log_level),
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
