"""Benchmark the CTR metrics (AUC, GAUC) at a million rows, vectorised vs the loops they replaced.

    .venv/bin/python scripts/bench_metrics.py [--rows 1000000] [--users 10000] [--repeats 5]

Synthetic CTR rows: `--rows` scores rounded to three decimals (so ties occur), about 1% NaN,
labels drawn with a click probability rising with the score, users as integer ids spread
uniformly over `--users` (about 100 rows each). `recllm.evaluation.metrics.auc` and `gauc`
are timed `--repeats` times after one warm-up and their medians printed; the per-row and
per-user loops they replaced (kept here only, as `loop_auc` and `loop_gauc`) are timed once
on the same data, and both answers are compared. With string user ids the old GAUC is slower
still (each user's mask compares every row as a Python object).
Progress goes to stderr, the results to stdout; the last line is `auc on 1M rows: X s`.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench_common import log, median_time
from recllm.evaluation.metrics import auc, gauc


def once(fn) -> tuple[float, object]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


# -- the reference: metrics.py's loops before vectorisation, unchanged ---------------------


def loop_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The old `auc`: average ranks assigned in a Python loop over every sorted row."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def loop_gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """The old `gauc`: `loop_auc` per user, each user's rows found by a mask over all rows."""
    groups, labels, scores = np.asarray(groups), np.asarray(labels), np.asarray(scores)
    total = weight = 0.0
    for g in np.unique(groups):
        mine = groups == g
        value = loop_auc(labels[mine], scores[mine])
        if value == value:
            total += value * mine.sum()
            weight += mine.sum()
    return float(total / weight) if weight else float("nan")


# -- data and measures ----------------------------------------------------------------------


def ctr_rows(n: int, n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, labels, scores) for n impressions: clicks likelier at higher scores, ties and some NaNs."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 3)
    labels = (rng.random(n) < 0.05 + 0.3 * scores).astype(np.int8)
    scores[rng.random(n) < 0.01] = np.nan
    return rng.integers(0, n_users, n), labels, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    users, labels, scores = ctr_rows(args.rows, args.users, args.seed)
    log(f"{args.rows:,} rows, {len(np.unique(users)):,} users, {labels.mean():.3f} click rate")
    log(f"vectorised auc and gauc: {args.repeats} repeats after a warm-up")
    auc_s, auc_value = median_time(lambda: auc(labels, scores), args.repeats)
    gauc_s, gauc_value = median_time(lambda: gauc(users, labels, scores), args.repeats)
    log("old loop auc, once")
    loop_auc_s, loop_auc_value = once(lambda: loop_auc(labels, scores))
    log("old loop gauc, once")
    loop_gauc_s, loop_gauc_value = once(lambda: loop_gauc(users, labels, scores))
    for name, new, old in (("auc", auc_value, loop_auc_value), ("gauc", gauc_value, loop_gauc_value)):
        if abs(new - old) > 1e-9:
            sys.exit(f"{name}: vectorised {new!r} differs from the loop's {old!r}")

    rows = f"{args.rows / 1e6:g}M" if args.rows >= 1_000_000 else f"{args.rows:,}"
    print(f"\n{args.rows:,} rows, {args.users:,} users; vectorised: median of {args.repeats}, loop: one run")
    print("| metric | value | vectorised (s) | loop (s) | loop / vectorised |")
    print("|---|---:|---:|---:|---:|")
    print(f"| auc | {auc_value:.6f} | {auc_s:.3f} | {loop_auc_s:.3f} | {loop_auc_s / auc_s:.0f}x |")
    print(f"| gauc | {gauc_value:.6f} | {gauc_s:.3f} | {loop_gauc_s:.3f} | {loop_gauc_s / gauc_s:.0f}x |")
    print(f"gauc on {rows} rows: {gauc_s:.3f} s")
    print(f"auc on {rows} rows: {auc_s:.3f} s")


if __name__ == "__main__":
    main()
