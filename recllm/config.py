"""Job configuration: a YAML file mapped onto small dataclasses, with errors naming the key.

Every key has a default, so an empty file (or none) runs the embedded default; an unknown
key or a value of the wrong type is refused with its dotted path, e.g. `lake.backend`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """The configuration file is malformed; the message names the offending key."""


@dataclass
class LakeConfig:
    root: str = "lake"
    backend: str = "auto"
    catalog_prefix: str | None = None


@dataclass
class SparkConfig:
    master: str = "local[2]"
    app_name: str = "recllm"
    shuffle_partitions: int = 4
    driver_memory: str = "4g"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class IngestConfig:
    rating_min: float = 0.0
    rating_max: float = 5.0
    age_min: int = 0
    age_max: int = 120


@dataclass
class FeaturesConfig:
    text_encoder: str = "minilm"  # "minilm" (the packaged all-MiniLM-L6-v2) or a local HF/sentence-transformers path
    batch_size: int = 64
    max_text_chars: int = 512
    cold_min_events: int = 5  # an item with fewer accepted events up to ds is cold


@dataclass
class PromptsConfig:
    template: str = "{instruction} Scenario: {scenario}. User: {profile}. {query}History: {history}"
    template_version: str = "v1"
    history_length: int = 20
    max_lookback_events: int = 200
    max_text_chars: int = 200
    split: str = "time"  # time: last test_days are test, the valid_days before are valid; leave_last_out: per user
    valid_days: int = 1
    test_days: int = 1
    objectives: dict[str, dict] = field(default_factory=dict)  # name -> {instruction, template_version, enabled}
    ctr: bool = True  # also write impression examples (label 1 = clicked) for the CTR head
    rating_ctr_threshold: float | None = None  # also CTR examples from ratings: label 1 when rating >= this (rating-only data)


@dataclass
class ModelConfig:
    backbone: str = "default"  # "default" (small Qwen2 from config), "minilm", or a local HF model path
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256
    initializer_range: float = 0.05  # default backbone only; HF's 0.02 learned far slower here
    vocab_size: int = 4000
    max_tokens: int = 256
    n_query_tokens: int = 4
    id_dim: int = 64
    out_dim: int = 64
    init_scale: float = 20.0
    id_dropout: float = 0.5  # share of training lookups without the ID vector: text/image must carry the item
    lm_loss_weight: float = 0.1
    slot_attention: bool = True  # each query token pools the history's slots by attention (else the mean)


@dataclass
class TrainConfig:
    num_processes: int = 2
    local_mode: bool = True
    use_gpu: str = "auto"  # auto | true | false
    epochs: int = 20
    batch_size: int = 128
    grad_accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    full_softmax_max_items: int = 50000
    num_negatives: int = 4096
    ctr_loss_weight: float = 1.0
    checkpoint_every_steps: int = 100
    patience: int = 3
    eval_k: int = 10
    seed: int = 0
    model_root: str = "models"
    max_train_examples: int = 0  # 0 = all


@dataclass
class ScoreConfig:
    model_version: str = "latest"  # "latest" (newest created_at in `models`) or a version id
    top_k: int = 50  # candidates per user and objective
    batch_size: int = 256  # prompts per forward pass
    chunk_size: int = 65536  # catalogue items scored at once; memory ~ batch_size x n_query_tokens x chunk_size x 4 bytes
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    torch_threads: int = 1  # torch CPU threads per Spark task (0: leave torch's default)
    exclude_purchased: bool = True  # drop items the user bought up to ds from candidates and fills
    ctr_top_n: int = 10  # p_click for each user's top-n candidates of every objective
    cold_item_users: int = 20  # each new item is placed with its top-N users
    new_user_k: int = 20  # fills per new user, from profile and objective text alone
    cold_objective: str = "click"  # objective whose prompts rank users for new items and build new-user prompts
    requests_table: str = ""  # optional table name or path of (user_id, item_id, scenario[, ds]) pairs to score
    work_root: str = "scoring"  # driver writes the day's catalogue snapshot here; executors read it (shared storage on a cluster)


@dataclass
class EvaluateConfig:
    id_only_expert: bool = True  # also train the ID-only, SASRec-style expert (same loop, no text) and evaluate it
    expert_epochs: int = 10  # its epoch budget (early stopping as in train:)
    expert_objective: str = "click"  # the sequence it learns to continue (like: rated 4+ for rating-only data)


@dataclass
class NightlyConfig:
    retrain_every_days: int = 1  # train when the latest model is this many days old (1: every night)


@dataclass
class RecllmConfig:
    lake: LakeConfig = field(default_factory=LakeConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; known: {sorted(names)}")
    values = {}
    for name, raw in data.items():
        key = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw or {}, key)
        else:
            values[name] = _check_type(raw, hint, key)
    return cls(**values)


def _check_type(value, hint, key: str):
    origin = typing.get_origin(hint)
    allowed = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    for t in allowed:
        base = typing.get_origin(t) or t
        if t is type(None) and value is None:
            return value
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is not type(None) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
    names = [getattr(t, "__name__", str(t)) for t in allowed]
    raise ConfigError(f"config key {key}: expected {' or '.join(names)}, got {value!r}")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RecllmConfig:
    """Read a YAML config (None: all defaults), applying `overrides` section by section."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return _build(RecllmConfig, data, "")
