"""The model card: a README.md in each trained model's folder, so whoever opens the folder knows what it is.

Written from the version's `models` row (`recllm.registry.model_row`) before the row is
registered: version, warm-start parent or cold, data window, objectives, validation metrics,
speed and memory, the `model:` and `train:` settings, and how to load the folder.
"""

from __future__ import annotations

import json
import os

from recllm.model.shared_files import file_mode

MODEL_CARD = "README.md"


def model_card(row: dict, history: list[dict] | None = None) -> str:
    """The card's Markdown for a `models` row; `history` (the run's per-epoch summaries) adds a table of epochs."""
    metrics = json.loads(row["metrics_json"] or "{}")
    config = json.loads(row["config_json"])
    k = config.get("train", {}).get("eval_k", 10)
    parent = row.get("parent_version")
    reason = metrics.get("start_reason")
    if parent:
        start = reason or f"warm start from {parent}"
    else:
        start = "cold start from fresh weights" + (f" ({reason})" if reason else "")
    objectives = metrics.get("objectives") or {}
    lines = [
        f"# {row['model_version']}",
        "",
        f"A URM recommender trained by recllm for run date {row['ds']}, registered in the lake's `models` table.",
        "",
        "| | |",
        "|---|---|",
        f"| version | `{row['model_version']}` |",
        f"| parent version | {f'`{parent}` (warm start)' if parent else 'none (cold start)'} |",
        f"| how it started | {start} |",
        f"| data window | {row.get('data_start_ds') or 'unknown'} .. {row['data_end_ds']} (run dates of its events: "
        "the training, validation and test examples as `prompts.split` divides them) |",
        "| objectives trained | " + (", ".join(f"{name} ({n:,} examples)" for name, n in sorted(objectives.items()))
                                    or "not recorded") + " |",
        f"| created | {_time(row.get('created_at'))} |",
        "",
        "## Validation",
        "",
    ]
    if "best_valid_recall" in metrics:
        lines.append(f"Best valid recall@{k}: **{metrics['best_valid_recall']:.4f}** at epoch "
                     f"{metrics.get('best_epoch', '?')} of {metrics.get('epochs_run', '?')} epoch(s) run "
                     f"({_count(metrics.get('steps'))} optimizer steps over {_count(metrics.get('train_examples'))} "
                     "training examples); these weights are the best epoch's.")
    else:
        lines.append("No validation metrics were recorded.")
    if history:
        lines += ["", f"| epoch | loss | valid recall@{k} | examples/s |", "|---:|---:|---:|---:|"]
        lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h.get(f'recall@{k}', 0.0):.4f} | "
                  f"{h.get('examples_per_s', 0.0):,.0f} |" for h in history]
    lines += ["", "## Speed and memory", "", _speed(metrics), "",
              "## Load it", "",
              "```python",
              "from recllm.model.inference import Scorer",
              f"scorer = Scorer.load({row['path']!r}, device=\"cpu\")  # the URM, its tokenizer and item catalogue",
              "model, catalog = scorer.model, scorer.catalog",
              "```",
              "",
              "Or by version from the lake: `recllm.registry.resolve_model(lake, "
              f"{row['model_version']!r}).path`. Only safetensors are loaded, never pickle.",
              "",
              "## Files",
              "",
              "`model.safetensors` (weights), `urm_config.json` (shape), tokenizer files, `catalog.safetensors` and "
              "`item_index.json` (the item catalogue it trained with, by stable item index), and for large catalogues "
              "`item_index.faiss` with `item_index_meta.json` (the approximate top-K index).",
              "",
              "## Configuration",
              "",
              "The `model:` and `train:` sections it was trained with:",
              "",
              "```json",
              json.dumps(config, indent=2, sort_keys=True),
              "```",
              ""]
    return "\n".join(lines)


def write_model_card(directory: str, row: dict, history: list[dict] | None = None) -> str:
    """Write `model_card` as `README.md` into the model's folder (group-readable); returns its path."""
    path = os.path.join(directory, MODEL_CARD)
    with open(path + ".tmp", "w") as f:
        f.write(model_card(row, history))
    os.chmod(path + ".tmp", file_mode())
    os.replace(path + ".tmp", path)
    return path


def _speed(metrics: dict) -> str:
    if not metrics.get("examples_per_s"):
        return "Not recorded."
    device = metrics.get("device", "?")
    said = (f"{metrics['examples_per_s']:,.0f} examples/s ({metrics.get('tokens_per_s', 0.0):,.0f} tokens/s) over the "
            f"whole run, on {metrics.get('world_size', '?')} {device} process(es)")
    peak = metrics.get("peak_memory_bytes")
    if peak:
        what = "GPU memory allocated" if device == "cuda" else "resident memory of a process"
        said += f"; peak {what}: {peak / 2**20:,.0f} MiB"
    return said + "."


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(value, "strftime") else str(value or "unknown")
