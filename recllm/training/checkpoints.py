"""Training checkpoints in safetensors: weights, optimizer state and progress, replaced atomically.

A rank-0 process writes `checkpoints/latest` under the model version's work folder; a
rerun of the same version (a crashed job, a lost rank) resumes from it.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, load_model

from recllm.model.shared_files import save_file, save_model, share_with_group
from recllm.model.urm import URM

CHECKPOINT_DIR = "checkpoints"
LATEST_CHECKPOINT = "latest"


def save_checkpoint(work_dir: str, model: URM, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Atomically replace the latest checkpoint (weights, optimizer state, progress), readable by the owner's group."""
    root = os.path.join(work_dir, CHECKPOINT_DIR)
    tmp = os.path.join(root, f".tmp-{state['step']}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_model(model, os.path.join(tmp, "model.safetensors"))
    tensors, meta = _flatten_optimizer(optimizer)
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({**state, "optimizer_meta": meta}, f)
    share_with_group(tmp)
    latest = os.path.join(root, LATEST_CHECKPOINT)
    old = os.path.join(root, ".old")
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(latest):
        os.rename(latest, old)
    os.rename(tmp, latest)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(work_dir: str, model: URM, optimizer: torch.optim.Optimizer, device) -> dict | None:
    """Restore the latest checkpoint into model and optimizer; None when there is none."""
    latest = os.path.join(work_dir, CHECKPOINT_DIR, LATEST_CHECKPOINT)
    if not os.path.exists(os.path.join(latest, "state.json")):
        return None
    for name in ("model.safetensors", "optimizer.safetensors"):
        if not os.path.exists(os.path.join(latest, name)):
            raise FileNotFoundError(f"checkpoint {latest} is missing {name}")
    with open(os.path.join(latest, "state.json")) as f:
        state = json.load(f)
    try:
        load_model(model, os.path.join(latest, "model.safetensors"), device=str(device))
        _restore_optimizer(optimizer, load_file(os.path.join(latest, "optimizer.safetensors"), device=str(device)),
                           state.pop("optimizer_meta"))
    except Exception as e:
        raise RuntimeError(f"checkpoint {latest} is corrupted: {e}") from e
    return state


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            tensors[f"{pid}.{key}"] = (value if torch.is_tensor(value) else torch.tensor(value)).detach().cpu().contiguous()
    return tensors, {"param_groups": sd["param_groups"]}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
