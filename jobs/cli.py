"""The `recllm` console script: `recllm <job> [job arguments]`, e.g. `recllm ingest --ds 2026-01-02`.

`recllm`, `recllm --help` or an unknown job print the jobs with what each does; `recllm <job> --help`
prints that job's arguments. Every job module `jobs.<job>` has `build_parser()` and `cli(argv)`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

JOBS = ("land", "landed", "ingest", "features", "prompts", "train", "score", "evaluate", "report", "nightly", "demo", "benchmark", "sensitivity", "sql")


def describe(job: str) -> str:
    """The job's one-line description: the first line of its module docstring, read from the source without
    importing the module (so listing the jobs loads neither Spark nor torch)."""
    source = Path(importlib.util.find_spec(f"jobs.{job}").origin).read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.splitlines()[0] if doc else ""


def jobs_help() -> str:
    """The console script's help: its usage and every job with its one-line description."""
    width = max(map(len, JOBS))
    lines = ["usage: recllm <job> [job arguments]   (recllm <job> --help lists a job's arguments)", "", "jobs:"]
    lines += [f"  {job:<{width}}  {describe(job)}" for job in JOBS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(jobs_help())
        return
    if not argv or argv[0] not in JOBS:
        unknown = f"recllm: unknown job {argv[0]!r}\n" if argv else ""
        print(unknown + jobs_help(), file=sys.stderr)
        sys.exit(2)
    importlib.import_module(f"jobs.{argv[0]}").cli(argv[1:])


if __name__ == "__main__":
    main()
