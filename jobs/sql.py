"""Run a SQL query over the lake's tables, each a view of its own name, and print the result.

    recllm sql "SELECT objective, count(*) AS users FROM candidates WHERE rank = 1 GROUP BY objective"
    recllm sql --format csv --limit 0 "SELECT * FROM metrics WHERE task = 'ctr'" > ctr.csv
"""

from __future__ import annotations

import argparse
import logging

from jobs.common import open_lake, parser, run

log = logging.getLogger("recllm.jobs.sql")


def main(args: argparse.Namespace) -> None:
    from recllm.lake.query import query, render

    _, lake = open_lake(args)
    frame, more = query(lake, args.query, args.limit or None)
    print(render(frame, args.format), flush=True)
    log.info("sql: %d rows printed%s", len(frame), f"; more not shown (--limit {args.limit}; 0 shows all)" if more else "")


def build_parser() -> argparse.ArgumentParser:
    from recllm.lake.query import FORMATS

    p = parser(__doc__.splitlines()[0], needs_ds=None, job="sql")
    p.add_argument("query", help="Spark SQL; the lake's tables are views named after them (candidates, metrics ...)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned text), csv, or json (one object per line) (default: %(default)s)")
    p.add_argument("--limit", type=int, default=100,
                   help="print at most this many rows; 0 prints all (default: %(default)s)")
    return p


def cli(argv: list[str] | None = None) -> None:
    run("sql", main, build_parser().parse_args(argv))


if __name__ == "__main__":
    cli()
