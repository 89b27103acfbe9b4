"""The real-data benchmark end to end on a tiny MovieLens-format folder: one table, JSON rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jobs import benchmark

pytestmark = pytest.mark.slow  # trains and evaluates every model on a tiny MovieLens

GENRES = ("Comedy", "Drama", "Horror", "Sci-Fi")


def tiny_movielens(root) -> None:
    """40 movies in 4 genres; 40 users who each rate 12 movies, mostly of their favourite genre, highly."""
    rng = np.random.default_rng(0)
    root.mkdir()
    movies = pd.DataFrame({"movieId": range(1, 41), "title": [f"Movie {m} (1999)" for m in range(1, 41)],
                           "genres": [GENRES[m % 4] for m in range(1, 41)]})
    rows = []
    for user in range(1, 41):
        favourite = user % 4
        own = [m for m in range(1, 41) if m % 4 == favourite]
        other = [m for m in range(1, 41) if m % 4 != favourite]
        picks = list(rng.choice(own, 8, replace=False)) + list(rng.choice(other, 4, replace=False))
        for t, movie in enumerate(rng.permutation(picks)):
            rating = 5.0 if movie % 4 == favourite else 2.0
            rows.append((user, int(movie), rating, 1_000_000_000 + user * 1000 + t))
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(root / "ratings.csv", index=False)
    movies.to_csv(root / "movies.csv", index=False)


def test_the_benchmark_prints_one_table_and_writes_json_rows(tmp_path, capsys, spark):
    tiny_movielens(tmp_path / "tiny-ml")
    config = tmp_path / "recllm.yaml"
    config.write_text("model: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, vocab_size: 600}\n"
                      "train: {epochs: 2, batch_size: 64, num_processes: 1}\n"
                      "evaluate: {expert_epochs: 2}\n")
    out = tmp_path / "results.json"
    benchmark.cli(["--data", str(tmp_path / "tiny-ml"), "--format", "movielens", "--config", str(config),
                   "--out", str(out), "--work", str(tmp_path / "work"), "--log-level", "WARNING"])
    printed = capsys.readouterr().out
    assert "| model | recall@10 | recall@50 | ndcg@10 | ndcg@50 |" in printed
    for model in ("urm", "popularity", "als", "sasrec"):
        assert f"| {model} |" in printed
    rows = json.loads(out.read_text())
    assert all(set(r) == {"model", "metric", "k", "value"} for r in rows)
    recall = {r["model"]: r["value"] for r in rows if r["metric"] == "recall" and r["k"] == 10}
    assert set(recall) == {"urm", "popularity", "als", "sasrec"}
    assert all(0.0 <= v <= 1.0 for v in recall.values())
    assert any(r["model"] == "urm" and r["metric"] == "train_s" and r["value"] > 0 for r in rows)
    ctr_auc = {r["model"]: r["value"] for r in rows if r["metric"] == "auc"}  # likes (5 stars) against dislikes (2)
    assert set(ctr_auc) == {"urm", "gbt_ctr"} and ctr_auc["gbt_ctr"] > 0.9
