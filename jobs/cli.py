"""The `recllm` console script: `recllm <job> [job arguments]`, e.g. `recllm ingest --ds 2026-01-02`."""

from __future__ import annotations

import importlib
import sys

JOBS = ("land", "ingest", "features", "prompts", "train", "score", "evaluate", "nightly", "demo", "benchmark", "sensitivity")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        print(f"usage: recllm {{{','.join(JOBS)}}} [--ds YYYY-MM-DD] [--config FILE] ...", file=sys.stderr)
        sys.exit(2)
    importlib.import_module(f"jobs.{argv[0]}").cli(argv[1:])


if __name__ == "__main__":
    main()
