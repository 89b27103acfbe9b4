"""Scoring's executor functions: the `mapInPandas` bodies that `recllm.scoring.stage` runs.

Each task asks `recllm.scoring.batch.get_scorer` for its scorer: the cache lives in that
importable module, so a Python worker loads a model version and computes the catalogue's
item output vectors once for all the tasks it runs (Spark reuses workers). Before loading,
the task sets torch's CPU threads (`score.torch_threads`, default 1: Spark already runs one
task per core) and picks its device (`score.device`: auto = the GPU Spark assigned to the
task, or the first one, when present; else CPU).
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from recllm.scoring.batch import WorkerSpec


def _task_device(setting: str) -> str:
    """The task's device: the GPU Spark assigned to it when there is one, else per `score.device`."""
    from recllm.scoring.batch import resolve_device

    device = resolve_device(setting)
    if device == "cuda":
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            device = f"cuda:{gpus.addresses[0]}"
    return device


def _worker_scorer(spec: WorkerSpec):
    from recllm.progress import log_recllm_info_to_stderr
    from recllm.scoring.batch import get_scorer, set_torch_threads

    log_recllm_info_to_stderr()  # scoring's progress lines, into the executor log
    set_torch_threads(spec.torch_threads)
    return get_scorer(spec.model_dir, spec.catalog_dir, _task_device(spec.device), spec.ann_nprobe, spec.chunk_size)


def candidates_fn(spec: WorkerSpec, k: int, new_items: list[int] | None = None, new_item_users: int = 0,
                  placement_objective: str | None = None):
    """mapInPandas function: prompt rows -> `recllm.scoring.batch.score_candidates` rows (CANDIDATE_SCHEMA)."""
    from recllm.scoring.batch import score_candidates

    return _per_batch(spec, lambda pdf, scorer: score_candidates(
        pdf, scorer, k, spec.batch_size, spec.chunk_size, new_items, new_item_users, placement_objective))


def ctr_fn(spec: WorkerSpec):
    """mapInPandas function: (user, scenario, prompt, items) rows -> `recllm.scoring.batch.score_ctr` rows (CTR_SCHEMA)."""
    from recllm.scoring.batch import score_ctr

    return _per_batch(spec, lambda pdf, scorer: score_ctr(pdf, scorer, spec.batch_size))


def _per_batch(spec: WorkerSpec, score_batch):
    """A mapInPandas function applying `score_batch` to each non-empty batch with the worker's scorer."""

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = None
        for pdf in batches:
            if pdf.empty:
                continue
            scorer = scorer or _worker_scorer(spec)
            yield score_batch(pdf, scorer)

    return score
