"""Job configuration: a YAML file mapped onto small dataclasses, with errors naming the key.

Every key has a default, so an empty file (or none) runs the embedded default; an unknown
key, a key given twice, a value of the wrong type or out of its range (`MINIMUMS`,
`MAXIMUMS`, `CHOICES`, ...) is refused with its dotted path, e.g. `lake.backend`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
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
    earliest_ts: str = "1990-01-01"  # timestamps before this day are implausible (epoch 0, year 1) and quarantined


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
    out_dim: int = 64  # user and item vectors (128: Office NDCG@10 0.0605 against 0.0582, but a warm-start test missed its bar; README)
    init_scale: float = 20.0
    id_dropout: float = 0.5  # share of training lookups without the ID vector: text/image must carry the item
    lm_loss_weight: float = 0.1
    ctr_history: bool = True  # the CTR logit also weighs the impressed item's mean similarity to the history's items
    ctr_text_history: bool = True  # ... and a logistic regression on top adds its text's mean cosine similarity to the history items' (README: the demo's table)
    item_prior: bool = True  # retrieval and CTR logits add a learned linear prior of the item vector (popularity, quality)
    item_bias: bool = True  # retrieval and CTR logits add a learned bias per trained item ID, started at the log frequency of the training targets
    ctr_item_bias: bool = False  # the CTR logit adds its own learned offset per trained item ID (its click rate once shown); README: the demo's table
    slot_attention: bool = True  # each query token pools the history's slots by attention (else the mean)


@dataclass
class TrainConfig:
    num_processes: int = 2
    local_mode: bool = True
    use_gpu: bool | str = "auto"  # auto | true | false
    torch_threads: int = 0  # CPU threads per rank (0: the host's cores shared among its local ranks)
    max_attempts: int = 2  # runs of the distributed job; a failed one is rerun from its last checkpoint
    epochs: int = 20
    batch_size: int = 128
    grad_accum_steps: int = 1
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine: warm up, then decay to 0 over train.epochs (early stopping may end sooner) | constant
    warmup_fraction: float = 0.05  # cosine only: share of the run's steps spent ramping the rate up from 0
    precision: str = "auto"  # auto: bf16 autocast on a GPU, fp32 on a CPU | fp32 | bf16 (on a CPU: for wide models on CPUs with native bf16)
    weight_decay: float = 0.1  # AdamW's decoupled decay; 0.01 overfit the demo's small days (README: What the demo does)
    full_softmax_max_items: int = 50000
    num_negatives: int = 4096
    ctr_loss_weight: float = 1.0
    checkpoint_every_steps: int = 100
    patience: int = 3
    eval_k: int = 10
    seed: int = 0
    model_root: str = "models"
    lm_fraction: float = 0.25  # share of retrieval examples that also carry the LM target (its tokens and vocabulary-wide head cost)
    block_rows: int = 8192  # prompt rows a rank reads, tokenises and shuffles at a time: bounds its memory
    batch_balance: str = "rows"  # rows: batch_size rows each | cost: batch_size rows on average, cut to equal estimated cost, so no DDP rank waits for another (1.16x on Office; README)
    max_train_examples: int = 0  # 0 = all
    warm_start: bool = True  # jobs.nightly continues from the newest model (jobs.train and jobs.benchmark train cold)
    warm_epochs: int = 4  # epoch budget of a warm-started run (early stopping with warm_patience)
    warm_patience: int = 2
    warm_replay_fraction: float = 0.1  # share of the older training examples a warm run replays beside the new ones
    warm_lr_scale: float = 0.3  # a warm run's learning rate is train.lr times this (a fresh AdamW at full lr knocks the parent off)


@dataclass
class ScoreConfig:
    model_version: str = "latest"  # "latest" (newest created_at in `models`) or a version id
    top_k: int = 50  # candidates per user and objective
    batch_size: int = 256  # prompts per forward pass
    chunk_size: int = 65536  # catalogue items scored at once; memory ~ batch_size x n_query_tokens x chunk_size x 4 bytes
    device: str = "auto"  # auto (cuda when present) | cpu | cuda
    torch_threads: int = 1  # torch CPU threads per Spark task (0: leave torch's default)
    exclude_purchased: bool = True  # drop items the user bought up to ds from candidates and fills
    exclude_history: bool = False  # also drop the items of each inference prompt's history from its candidates
    ctr_top_n: int = 10  # p_click for each user's top-n candidates of every objective
    cold_item_users: int = 20  # each new item is placed with its top-N users
    new_user_k: int = 20  # fills per new user, from profile and objective text alone
    cold_objective: str = "click"  # objective whose prompts rank users for new items and build new-user prompts
    requests_table: str = ""  # optional table name or path of (user_id, item_id, scenario[, ds]) pairs to score
    work_root: str = "scoring"  # driver writes the day's catalogue snapshot here; executors read it (shared storage on a cluster)
    top_k_method: str = "auto"  # exact (every item scored) | ann (item index, then exact rescoring) | auto
    ann_min_items: int = 500000  # auto uses the item index from this catalogue size on
    ann_nprobe: int = 32  # index lists scanned per query vector (more: closer to exact, slower)

    def uses_index(self, n_items: int) -> bool:
        """Whether top-K over a catalogue of `n_items` goes through the item index (`top_k_method`)."""
        return self.top_k_method == "ann" or (self.top_k_method == "auto" and n_items >= self.ann_min_items)


@dataclass
class EvaluateConfig:
    id_only_expert: bool = True  # also train the ID-only expert (a SASRec over item IDs, no text) and evaluate it
    expert_epochs: int = 100  # its most epochs; early stopping on validation NDCG@10 usually ends it sooner
    expert_objective: str = "click"  # the sequence it learns to continue (like: rated 4+ for rating-only data)
    mask_history: bool = False  # rank without each test row's history items (RecBole's full-sort protocol)
    primary_objective: str = "click"  # the model becomes MLflow's `champion` when it beats popularity's recall@10 on it


@dataclass
class NightlyConfig:
    retrain_every_days: int = 1  # train when the latest model is this many days old (1: every night)
    cold_retrain_every_days: int = 7  # with train.warm_start, train cold when the last cold model is this old (0: never)


@dataclass
class MlflowConfig:
    enabled: bool = True  # false: no run is logged, no version registered, nothing imports MLflow
    tracking_uri: str | None = None  # None: sqlite:///<the lake's parent folder>/mlflow.db, artifacts in mlflow-artifacts/ beside it
    registry_uri: str | None = None  # None: the tracking store's; databricks-uc: Unity Catalog
    experiment: str = "recllm"  # experiment the training runs are logged under
    registered_model_name: str = "recllm"  # the registered model; in Unity Catalog a three-part name, e.g. main.recllm.urm


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
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "lake.backend": ("auto", "deltars", "native"),
    "prompts.split": ("time", "leave_last_out"),
    "train.use_gpu": ("auto", "true", "false"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.batch_balance": ("cost", "rows"),
    "score.device": ("auto", "cpu", "cuda"),
    "score.top_k_method": ("auto", "exact", "ann"),
}
"""Keys that take one of a few words (`train.use_gpu` also takes a YAML true or false)."""

MINIMUMS: dict[str, float] = {
    "spark.shuffle_partitions": 1,
    "ingest.age_min": 0,
    "features.batch_size": 1,
    "features.max_text_chars": 1,
    "features.cold_min_events": 0,
    "prompts.history_length": 1,
    "prompts.max_lookback_events": 1,
    "prompts.max_text_chars": 1,
    "prompts.valid_days": 0,
    "prompts.test_days": 0,
    "model.hidden_size": 1,
    "model.num_layers": 1,
    "model.num_heads": 1,
    "model.intermediate_size": 1,
    "model.vocab_size": 1,
    "model.max_tokens": 1,
    "model.n_query_tokens": 1,
    "model.id_dim": 1,
    "model.out_dim": 1,
    "model.id_dropout": 0,
    "model.lm_loss_weight": 0,
    "train.num_processes": 1,
    "train.torch_threads": 0,
    "train.max_attempts": 1,
    "train.epochs": 1,
    "train.batch_size": 1,
    "train.grad_accum_steps": 1,
    "train.weight_decay": 0,
    "train.warmup_fraction": 0,
    "train.full_softmax_max_items": 0,
    "train.num_negatives": 1,
    "train.ctr_loss_weight": 0,
    "train.checkpoint_every_steps": 1,
    "train.patience": 1,
    "train.eval_k": 1,
    "train.seed": 0,
    "train.max_train_examples": 0,
    "train.lm_fraction": 0,
    "train.block_rows": 1,
    "train.warm_epochs": 1,
    "train.warm_patience": 1,
    "train.warm_replay_fraction": 0,
    "score.top_k": 1,
    "score.batch_size": 1,
    "score.chunk_size": 1,
    "score.torch_threads": 0,
    "score.ctr_top_n": 1,
    "score.cold_item_users": 1,
    "score.new_user_k": 1,
    "score.ann_min_items": 1,
    "score.ann_nprobe": 1,
    "evaluate.expert_epochs": 1,
    "nightly.retrain_every_days": 1,
    "nightly.cold_retrain_every_days": 0,
}
"""Least allowed value of each count, size and weight."""

MAXIMUMS: dict[str, float] = {"model.id_dropout": 1, "train.lm_fraction": 1, "train.warm_replay_fraction": 1,
                               "train.warmup_fraction": 1}
"""Greatest allowed value, where there is one."""

POSITIVE = ("model.initializer_range", "model.init_scale", "train.lr", "train.warm_lr_scale")
"""Keys whose value must be above zero."""

NON_EMPTY = (
    "lake.root", "spark.master", "spark.app_name", "spark.driver_memory", "features.text_encoder",
    "prompts.template", "prompts.template_version", "model.backbone", "train.model_root", "score.model_version",
    "score.cold_objective", "score.work_root", "evaluate.expert_objective", "evaluate.primary_objective",
    "mlflow.tracking_uri", "mlflow.registry_uri", "mlflow.experiment", "mlflow.registered_model_name",
)
"""Text keys that must hold something besides spaces (where they may be null, when they are not)."""

ORDERED = (("ingest.rating_min", "ingest.rating_max"), ("ingest.age_min", "ingest.age_max"))
"""Pairs (low, high) where low must not exceed high."""

DATES = ("ingest.earliest_ts",)
"""Keys whose value must be a calendar date written YYYY-MM-DD."""


def check_section(section, name: str) -> None:
    """Refuse values out of range in one section (`name`: its key, e.g. "prompts"), naming the key."""
    for f in dataclasses.fields(section):
        key, value = f"{name}.{f.name}", getattr(section, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        if key in CHOICES:
            word = str(value).lower() if isinstance(value, bool) else value
            if word not in CHOICES[key]:
                raise ConfigError(f"{key} must be one of {list(CHOICES[key])}, got {value!r}")
        if key in MINIMUMS and value < MINIMUMS[key]:
            raise ConfigError(f"{key} must be at least {MINIMUMS[key]}, got {value!r}")
        if key in MAXIMUMS and value > MAXIMUMS[key]:
            raise ConfigError(f"{key} must be at most {MAXIMUMS[key]}, got {value!r}")
        if key in POSITIVE and not value > 0:
            raise ConfigError(f"{key} must be greater than 0, got {value!r}")
        if key in NON_EMPTY and value is not None and not value.strip():
            raise ConfigError(f"{key} must not be empty")
        if key in DATES and not is_calendar_date(value):
            raise ConfigError(f"{key} must be a real calendar date as YYYY-MM-DD, got {value!r}")
    for low, high in ORDERED:
        if low.startswith(name + ".") and high.startswith(name + "."):
            a, b = getattr(section, low.split(".")[1]), getattr(section, high.split(".")[1])
            if a > b:
                raise ConfigError(f"{low} ({a}) must not exceed {high} ({b})")


def is_calendar_date(text) -> bool:
    """True for a real calendar date written YYYY-MM-DD in ASCII digits, and nothing else (no trailing newline)."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def check_values(config: RecllmConfig) -> None:
    """Refuse any value out of range in any section, naming the key."""
    for f in dataclasses.fields(config):
        check_section(getattr(config, f.name), f.name)


class _Mapping(dict):
    """A YAML mapping that remembers the keys written more than once in it (YAML itself keeps the last)."""

    repeated: tuple[str, ...] = ()


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Mapping:
    """A mapping node as a `_Mapping`; keys brought in by a `<<` merge may repeat, written ones may not."""
    own = [loader.construct_object(k, deep=True) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    mapping = _Mapping(loader.construct_mapping(node, deep=True))
    mapping.repeated = tuple(sorted({str(k) for k in own if own.count(k) > 1}))
    return mapping


class _ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` whose mappings report repeated keys, and which reads an unquoted date as its text
    (every date setting is a `YYYY-MM-DD` string)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    where = f"{path}." if path else ""
    if getattr(data, "repeated", ()):
        raise ConfigError(f"{where}{data.repeated[0]} is given twice; YAML would silently keep the last")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; known: {sorted(names)}")
    values = {}
    for name, raw in data.items():
        key = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, {} if raw is None else raw, key)
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
    """Read a YAML config (None: all defaults), applying `overrides` section by section.

    The file is checked in full, types and values; `overrides` come from code and are
    checked for type only (each job checks the values of its own sections before it runs).
    """
    data: dict = {}
    if path is not None:
        data = _read_yaml(Path(path))
        check_values(_build(RecllmConfig, data, ""))
    merged = dict(data)
    for section, values in (overrides or {}).items():
        merged[section] = {**(data.get(section) or {}), **values}
    return _build(RecllmConfig, merged, "")


def _read_yaml(path: Path) -> dict:
    """The top-level mapping of a YAML file; an empty file is an empty mapping."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_ConfigLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections (lake:, spark:, ...), "
                          f"got {type(data).__name__}")
    return data
