"""Progress of long loops: a tqdm bar on a terminal, otherwise periodic INFO log lines.

    for batch in progress(batches, total=n_batches, desc="epoch 3", unit="batch", log=log):
        ...

Nightly jobs run with stderr in a file or a pipe (Spark executors, TorchDistributor ranks),
where a bar's carriage returns are noise; there a line such as
`epoch 3: 1200/4000 batch (30%), 41.2 batch/s, ETA 1m08s` is logged at most every `every_s`
seconds, and a final line when the loop ends (or is left early). The per-item cost is one
clock read and a comparison: nothing synchronises or formats until a line is due.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    log: logging.Logger = logger,
    every_s: float = 30.0,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield the items of `iterable` unchanged, showing how far it got.

    A tqdm bar when `stream` (default stderr) is a terminal; else an INFO line on `log` with
    done/total, rate and ETA at most every `every_s` seconds of `clock`, plus a final line.
    `total` defaults to len(iterable) when it has one; without a total, no percentage or ETA.
    """
    stream = sys.stderr if stream is None else stream
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _is_terminal(stream):
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=stream)
        return
    start = last = clock()
    done = 0
    try:
        for item in iterable:
            yield item
            done += 1
            now = clock()
            if now - last >= every_s:
                last = now
                log.info("%s", progress_line(desc, done, total, unit, now - start))
    finally:
        log.info("%s", progress_line(desc, done, total, unit, clock() - start, final=True))


def progress_line(desc: str, done: int, total: int | None, unit: str, elapsed_s: float, final: bool = False) -> str:
    """`desc: done/total unit (pct%), rate unit/s, ETA t`; a final line gives the elapsed time instead of the ETA."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    count = f"{done}/{total} {unit} ({100.0 * done / total:.0f}%)" if total else f"{done} {unit}"
    if final:
        return f"{desc}: {count} in {_duration(elapsed_s)}, {rate:.1f} {unit}/s"
    eta = f", ETA {_duration((total - done) / rate)}" if total and rate > 0 else ""
    return f"{desc}: {count}, {rate:.1f} {unit}/s{eta}"


def _duration(seconds: float) -> str:
    """12.3s, 4m05s or 2h03m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def log_recllm_info_to_stderr() -> None:
    """In a process with no logging set up (a Spark Python worker), send recllm's INFO lines to stderr.

    Spark keeps a worker's stderr in the executor's log (the console in local mode); without a
    handler, the progress lines of embedding and scoring tasks would be dropped. Other
    libraries stay at WARNING. Does nothing where logging is already configured.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("recllm").setLevel(logging.INFO)
