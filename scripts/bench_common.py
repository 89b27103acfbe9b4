"""What every benchmark script shares: a timestamped log, a median timer and Linux peak-RSS readings (no torch)."""

from __future__ import annotations

import statistics
import sys
import time

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall seconds of fn() over `repeats` runs after `warmup` untimed ones; and the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def status_mb(key: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM, ...) in MiB; nan where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Linux: make VmHWM (peak RSS) restart from the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
