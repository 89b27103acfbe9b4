"""URM: one language model as a universal recommender (arXiv 2502.03041), readable in one sitting.

A prompt is text with item slots; each slot's token embedding is replaced by the item's
fused soft token

    e_item = MLP_out(RMSNorm(MLP_id(x_id) + MLP_text(x_text) + MLP_img(x_img)))

(a missing modality contributes zero, so a cold item still has a vector). M learnable
query tokens close the prompt; their last hidden states, through a head, plus each token's
gated attention pool of the history items' output vectors (`slot_pool`, a documented
deviation that lets a small backbone learn fast), are M unit user vectors u_m. An item's
output vector w_i comes from the same fused representation, and

    s(u, i) = scale * max_m <u_m, w_i> + <v, w_i> + b_i

scores the WHOLE catalogue in one forward pass (sequence in, set out). Two documented
deviations, the item prior <v, w_i> (`item_prior`) and a bias b_i per trained item ID
(`item_bias`, started at the training targets' log frequency), say how often an item is
chosen whoever the user. A CTR head maps the unscaled score, its own item prior, the weighted
item bias, optionally its own offset per trained item ID (`ctr_item_bias`), the item's similarity
to the history (`ctr_history`) to a click probability; with `ctr_text_history` a logistic
regression on top adds the similarity of the item's text to the history's texts. An LM head
(causal backbones) predicts text after an `<|lm|>` marker.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerBase

from recllm.config import ModelConfig
from recllm.model.shared_files import save_file, save_model, share_with_group
from recllm.model.tokens import ITEM_SLOT, LM_TOKEN, QUERY_TOKEN

_DEFAULTS = ModelConfig()
SHARED_WITH_MODEL_CONFIG = ("id_dim", "out_dim", "n_query_tokens", "init_scale", "id_dropout", "slot_attention", "max_tokens",
                            "ctr_history", "ctr_text_history", "item_prior", "item_bias", "ctr_item_bias")
"""URMConfig fields that the `model:` config section sets; their defaults are that section's."""

WEIGHTS = "model.safetensors"
CONFIG = "urm_config.json"
CATALOG = "catalog.safetensors"
ITEM_INDEX = "item_index.json"

MIN_SHARED_PREFIX = 4
"""Rows that share fewer leading tokens run whole (a shared start costs a second, small pass)."""
TEXT_HEAD_LR_SCALE = 30.0
"""The CTR text stack's scalars learn this much faster than the rest: a small shop gives them about 100 steps."""


def shared_starts(input_ids: torch.Tensor, attention_mask: torch.Tensor, stop: set[int]) -> list[tuple[list[int], int]]:
    """Groups of rows (row indices, length) that start with the same `length` >= MIN_SHARED_PREFIX tokens.

    A row's start ends at its first `stop` token (item slot, query, LM marker or padding),
    so a start never holds anything that differs between rows. The rows are sorted by their
    starts and the sorted run is cut where that saves the most tokens: a group of n rows
    sharing p tokens saves (n - 1) * p. Rows in no group are left out; no group: [].
    """
    n_rows = input_ids.shape[0]
    if n_rows < 2:
        return []
    heads = []
    for row, n in zip(input_ids.tolist(), attention_mask.sum(dim=1).tolist()):
        k = 0
        while k < n and row[k] not in stop:
            k += 1
        heads.append(row[:k])
    order = sorted(range(n_rows), key=lambda r: heads[r])

    def common(a: list[int], b: list[int]) -> int:
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        return k

    adjacent = [common(heads[a], heads[b]) for a, b in zip(order, order[1:])]

    def best(lo: int, hi: int) -> tuple[int, list[tuple[list[int], int]]]:
        """(tokens saved, groups) for the sorted rows lo..hi (inclusive)."""
        if lo == hi:
            return 0, []
        q = min(adjacent[lo:hi])
        whole = (hi - lo) * q if q >= MIN_SHARED_PREFIX else 0
        cut = lo + adjacent[lo:hi].index(q)
        left, right = best(lo, cut), best(cut + 1, hi)
        if left[0] + right[0] > whole or whole == 0:
            return left[0] + right[0], left[1] + right[1]
        return whole, [(order[lo:hi + 1], q)]

    return best(0, n_rows - 1)[1]


@dataclass
class URMConfig:
    """Everything needed to rebuild the model's shape (weights live in safetensors)."""

    backbone: dict  # the backbone's HF config as a dict (model_type + fields)
    n_items_trained: int  # items with index < this have learned ID embeddings
    text_dim: int = 384
    image_dim: int = 16
    id_dim: int = _DEFAULTS.id_dim
    out_dim: int = _DEFAULTS.out_dim
    n_query_tokens: int = _DEFAULTS.n_query_tokens
    init_scale: float = _DEFAULTS.init_scale
    id_dropout: float = _DEFAULTS.id_dropout
    causal: bool = True  # decoder backbone: enables the LM head
    item_slot_id: int = -1
    query_token_id: int = -1
    lm_token_id: int = -1
    pad_token_id: int = 0
    max_tokens: int = _DEFAULTS.max_tokens
    slot_readout: bool = True  # add a pool of the history items' output vectors to each user vector
    slot_attention: bool = _DEFAULTS.slot_attention  # pool the slots by attention from each query token (zero-init: starts as the mean)
    ctr_history: bool = False  # the CTR logit also weighs the item's affinity to the history (models saved before: without)
    ctr_text_history: bool = False  # ... and its text's mean cosine similarity to the history's texts (models saved before: without)
    item_prior: bool = False  # logits add linear priors <v, w_i> of the item vector (models saved before: without)
    item_bias: bool = False  # logits add a learned bias b_i per trained item ID (models saved before: without)
    ctr_item_bias: bool = False  # the CTR logit adds its own learned offset c_i per trained item ID (models saved before: without)
    id_only: bool = False  # the SASRec-style expert: items are ID vectors alone, prompts are their slots alone
    extra: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @classmethod
    def from_model_config(cls, model: ModelConfig, **shape) -> "URMConfig":
        """The `model:` section's values for the fields it shares with this class; `shape` gives (or overrides) the rest."""
        return cls(**{**{name: getattr(model, name) for name in SHARED_WITH_MODEL_CONFIG}, **shape})


@dataclass
class ItemCatalog:
    """Frozen per-item inputs, indexed by stable item index."""

    text: torch.Tensor  # [N, text_dim]
    image: torch.Tensor  # [N, image_dim] (zeros where missing)
    has_image: torch.Tensor  # [N] bool
    item_ids: list[str]

    def __len__(self) -> int:
        return self.text.shape[0]

    def to(self, device) -> "ItemCatalog":
        return ItemCatalog(self.text.to(device), self.image.to(device), self.has_image.to(device), self.item_ids)

    def save(self, directory: str) -> None:
        save_file(
            {"text": self.text.contiguous(), "image": self.image.contiguous(), "has_image": self.has_image},
            os.path.join(directory, CATALOG),
        )
        with open(os.path.join(directory, ITEM_INDEX), "w") as f:
            json.dump(self.item_ids, f)

    @classmethod
    def load(cls, directory: str) -> "ItemCatalog":
        t = load_file(os.path.join(directory, CATALOG))
        with open(os.path.join(directory, ITEM_INDEX)) as f:
            item_ids = json.load(f)
        return cls(t["text"], t["image"], t["has_image"].bool(), item_ids)

    @classmethod
    def from_features(cls, features) -> "ItemCatalog":
        """The catalogue from an `item_features` pandas frame (dense indices 0..N-1; images may be missing)."""
        features = features.sort_values("item_index").reset_index(drop=True)
        n = len(features)
        if n == 0:
            raise ValueError("item_features is empty: run the features job first")
        if not (features["item_index"].to_numpy() == np.arange(n)).all():
            raise ValueError("item_features indices are not dense 0..N-1")
        text = torch.tensor(np.stack(features["text_embedding"].map(np.asarray).to_list()), dtype=torch.float32)
        images = features["image_embedding"].to_list()
        dim = next((len(v) for v in images if v is not None), 0)
        image = torch.zeros(n, dim)
        has_image = torch.zeros(n, dtype=torch.bool)
        for i, v in enumerate(images):
            if v is not None and len(v) == dim:
                image[i] = torch.as_tensor(np.asarray(v, dtype=np.float32))
                has_image[i] = True
        return cls(text, image, has_image, features["item_id"].to_list())


def mlp(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


class ItemFusion(nn.Module):
    """Per-modality MLPs, summed, RMSNorm, output MLP: one soft token per item."""

    def __init__(self, config: URMConfig):
        super().__init__()
        h = config.hidden_size
        self.n_items_trained = config.n_items_trained
        self.id_dropout = config.id_dropout
        self.id_only = config.id_only
        self.id_embedding = nn.Embedding(max(config.n_items_trained, 1), config.id_dim)
        nn.init.normal_(self.id_embedding.weight, std=0.02)
        self.mlp_id = mlp(config.id_dim, h)
        self.mlp_text = mlp(config.text_dim, h)
        self.mlp_img = mlp(config.image_dim, h) if config.image_dim else None
        self.norm = nn.RMSNorm(h)
        self.mlp_out = mlp(h, h)

    def forward(self, index: torch.Tensor, catalog: ItemCatalog) -> torch.Tensor:
        known = index < self.n_items_trained
        if self.training and self.id_dropout:
            known = known & (torch.rand(index.shape, device=index.device) >= self.id_dropout)
        x_id = self.mlp_id(self.id_embedding(index.clamp(max=self.n_items_trained - 1)))
        if self.id_only:  # an item never trained on has nothing to go on
            return self.mlp_out(self.norm(x_id * known.unsqueeze(-1)))
        x = self.mlp_text(catalog.text[index]) + x_id * known.unsqueeze(-1)
        if self.mlp_img is not None:
            x = x + self.mlp_img(catalog.image[index]) * catalog.has_image[index].unsqueeze(-1)
        return self.mlp_out(self.norm(x))


@dataclass
class Batch:
    """A tokenised, right-padded batch: slots and query tokens located, ready for forward."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    slot_rows: torch.Tensor  # [S] batch row of each item slot
    slot_cols: torch.Tensor  # [S] position of each item slot
    slot_items: torch.Tensor  # [S] item index filling each slot
    query_cols: torch.Tensor  # [B, M] positions of the query tokens
    lm_labels: torch.Tensor | None = None  # [B, T], -100 where no LM loss

    def to(self, device) -> "Batch":
        return Batch(*(None if v is None else v.to(device) for v in self.__dict__.values()))


@dataclass
class LossTargets:
    """What a training batch should predict: retrieval targets and/or CTR labels."""

    items: torch.Tensor  # [B] target item (retrieval) or impressed item (CTR)
    labels: torch.Tensor  # [B] CTR label; nan for retrieval examples
    sampling_probs: torch.Tensor | None = None  # None: full softmax over the catalogue
    num_negatives: int = 0
    retrieval_weight: float = 1.0
    ctr_weight: float = 1.0
    lm_weight: float = 0.0


class URM(nn.Module):
    """Backbone + item fusion + query tokens + set-out, CTR and LM heads."""

    def __init__(self, config: URMConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else AutoModel.from_config(
            AutoConfig.for_model(**config.backbone)
        )
        h = config.hidden_size
        self.fusion = ItemFusion(config)
        # Zero-initialised: a random embedding would outweigh the (small) attention output of a
        # freshly initialised backbone after its final norm, so every user would start with the
        # same vector and the history would barely move it.
        self.query_tokens = nn.Parameter(torch.zeros(config.n_query_tokens, h))
        self.slot_query = self.slot_gate = None
        if config.slot_readout and config.slot_attention:
            # Both zero-initialised: the pool starts as the plain mean, added with weight 1.
            self.slot_query = nn.Linear(h, h, bias=False)
            self.slot_gate = nn.Linear(h, 1)
            for layer in (self.slot_query, self.slot_gate):
                nn.init.zeros_(layer.weight)
            nn.init.zeros_(self.slot_gate.bias)
        self.user_head = mlp(h, config.out_dim)
        self.item_head = mlp(h, config.out_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(config.init_scale)))
        self.ctr_weight = nn.Parameter(torch.tensor(5.0))
        self.ctr_bias = nn.Parameter(torch.tensor(-2.0))
        self.ctr_history_weight = nn.Parameter(torch.tensor(5.0)) if config.ctr_history else None
        # The text-aware click logit is stacked on the vector head's (detached) logit: trained end to end, the text
        # term took over the category taste the CTR loss teaches the shared vectors, and retrieval lost it (README).
        self.ctr_text_weight = self.ctr_vector_weight = self.ctr_text_bias = None
        if config.ctr_text_history:
            self.ctr_text_weight = nn.Parameter(torch.tensor(5.0))
            self.ctr_vector_weight = nn.Parameter(torch.tensor(1.0))
            self.ctr_text_bias = nn.Parameter(torch.tensor(0.0))
        # Zero-initialised: a model starts with the plain similarity. The unit vectors alone cannot say how often an
        # item is shown or clicked whoever the user is; these learn it from the item's features, so new items get one too.
        self.retrieval_prior = self.ctr_prior = None
        if config.item_prior:
            self.retrieval_prior = nn.Linear(config.out_dim, 1, bias=False)
            self.ctr_prior = nn.Linear(config.out_dim, 1, bias=False)
            for layer in (self.retrieval_prior, self.ctr_prior):
                nn.init.zeros_(layer.weight)
        # One bias per trained item ID: how often each known item is chosen, which the prior above learns only slowly
        # (the ID half of the vector is dropped half the time). Zero until `init_item_bias` starts it at the training
        # targets' log frequency ("initialise the final bias to the data's prior"). The CTR logit reads it with a
        # learned weight that starts at 0 (how often an item is chosen mixes how often it is shown with its CTR).
        self.item_bias = self.ctr_item_bias_weight = None
        if config.item_bias:
            self.item_bias = nn.Embedding(max(config.n_items_trained, 1), 1)
            nn.init.zeros_(self.item_bias.weight)
            self.ctr_item_bias_weight = nn.Parameter(torch.tensor(0.0))
        # Zero-initialised: an item's own click rate once shown (how appealing it is whoever sees it), which neither
        # how often it is chosen (b_i) nor its features (the prior) say; new and untrained items keep 0.
        self.ctr_item_offset = nn.Embedding(max(config.n_items_trained, 1), 1) if config.ctr_item_bias else None
        if self.ctr_item_offset is not None:
            nn.init.zeros_(self.ctr_item_offset.weight)
        self.lm_head = None
        if config.causal:
            emb = self.backbone.get_input_embeddings()
            self.lm_head = nn.Linear(h, emb.weight.shape[0], bias=False)
            self.lm_head.weight = emb.weight

    # -- the forward pieces ---------------------------------------------------------------

    def item_vectors(self, catalog: ItemCatalog, index: torch.Tensor | None = None) -> torch.Tensor:
        """Unit output vectors w_i of the given (default: all) items, [N, out_dim]."""
        if index is None:
            index = torch.arange(len(catalog), device=catalog.text.device)
        return F.normalize(self.item_head(self.fusion(index, catalog)), dim=-1)

    def forward(self, batch: Batch, catalog: ItemCatalog, targets: LossTargets | None = None):
        """User vectors and hidden states; with `targets`, the joint training loss instead."""
        users, hidden, slot_vectors = self.encode_with_slots(batch, catalog)
        if targets is None:
            return users, hidden
        return self.joint_loss(users, hidden, batch, catalog, targets, slot_vectors)

    def encode(self, batch: Batch, catalog: ItemCatalog) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit user vectors [B, M, out_dim] and the backbone's last hidden states [B, T, H]."""
        users, hidden, _ = self.encode_with_slots(batch, catalog)
        return users, hidden

    def encode_with_slots(self, batch: Batch, catalog: ItemCatalog) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`encode`'s two, and the unit output vectors of the history's slots [S, out_dim], from the very fused
        vectors the prompt read (in training: the same ID-dropout draw), for the CTR head's history term."""
        emb = self.backbone.get_input_embeddings()(batch.input_ids)
        has_slots = len(batch.slot_items) > 0
        slot_values = emb.new_zeros(0, self.config.out_dim)
        if has_slots:
            fused = self.fusion(batch.slot_items, catalog)
            emb = emb.index_put((batch.slot_rows, batch.slot_cols), fused.to(emb.dtype))
            slot_values = self.item_head(fused)
        rows = torch.arange(emb.shape[0], device=emb.device).unsqueeze(1).expand_as(batch.query_cols)
        queries = self.query_tokens.to(emb.dtype).unsqueeze(0).expand(emb.shape[0], -1, -1)
        emb = emb.index_put((rows, batch.query_cols), queries)
        hidden = self.backbone_states(emb, batch)
        query_states = hidden[rows, batch.query_cols]
        user = self.user_head(query_states)
        if self.config.slot_readout and has_slots:
            pooled = self.slot_pool(hidden, batch, query_states, slot_values.to(user.dtype))
            if self.slot_gate is not None:  # the instruction may turn the history down, or against it
                pooled = pooled * (1.0 + self.slot_gate(query_states))
            user = user + pooled
        return F.normalize(user, dim=-1), hidden, F.normalize(slot_values, dim=-1)

    def backbone_states(self, emb: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The backbone's last hidden states [B, T, H] of the prompt embeddings.

        A causal backbone runs the tokens a group of rows starts with (an objective's
        instruction and scenario, often half a prompt) once per group, as a key/value cache
        that each row's remaining tokens attend to, at their own positions: the same states as
        running every row whole, for a fraction of the work.
        """
        groups = shared_starts(batch.input_ids, batch.attention_mask, self._stop_tokens()) if self.config.causal else []
        if not groups:
            return self.backbone(inputs_embeds=emb, attention_mask=batch.attention_mask).last_hidden_state
        n_rows, width = batch.input_ids.shape
        device = emb.device
        longest = max(length for _, length in groups)
        group_of_row = torch.zeros(n_rows, dtype=torch.long)
        start = torch.zeros(n_rows, dtype=torch.long)
        leaders, lengths = [], []
        for g, (rows, length) in enumerate(groups):
            group_of_row[rows] = g
            start[rows] = length
            leaders.append(rows[0])
            lengths.append(length)
        group_of_row, start = group_of_row.to(device), start.to(device)
        lengths = torch.tensor(lengths, device=device)
        positions = torch.arange(longest, device=device)
        head_mask = (positions < lengths.unsqueeze(1)).long()
        head = self.backbone(inputs_embeds=emb[leaders, :longest], attention_mask=head_mask, use_cache=True)
        cache = head.cache
        cache.batch_select_indices(group_of_row)  # rows outside every group (start 0) mask it all out

        row_length = batch.attention_mask.sum(dim=1)
        rest_width = int((row_length - start).max())
        steps = torch.arange(rest_width, device=device)
        take = (start.unsqueeze(1) + steps).clamp(max=width - 1)  # [B, rest_width] token positions
        rest_emb = emb.gather(1, take.unsqueeze(-1).expand(-1, -1, emb.shape[-1]))
        mask = torch.cat([(positions < start.unsqueeze(1)).long(),
                          (steps < (row_length - start).unsqueeze(1)).long()], dim=1)
        rest = self.backbone(inputs_embeds=rest_emb, attention_mask=mask, position_ids=start.unsqueeze(1) + steps,
                             cache=cache).last_hidden_state
        # back to each token's own position: the group's state before the row's start, its own after
        both = torch.cat([head.last_hidden_state[group_of_row], rest], dim=1)
        columns = torch.arange(width, device=device).unsqueeze(0)
        source = torch.where(columns < start.unsqueeze(1), columns, longest + columns - start.unsqueeze(1))
        source = source.clamp(max=both.shape[1] - 1)
        return both.gather(1, source.unsqueeze(-1).expand(-1, -1, both.shape[-1]))

    def _stop_tokens(self) -> set[int]:
        c = self.config
        return {c.item_slot_id, c.query_token_id, c.lm_token_id, c.pad_token_id}

    def slot_pool(self, hidden: torch.Tensor, batch: Batch, queries: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Each query token's pool of its row's history items in output space, [B, M, out_dim].

        A shortcut from the history's items to the user vectors: a small, randomly
        initialised backbone learns to route item information into the query tokens only
        slowly, while a pool of the history's item output vectors (`values`, [S, out_dim])
        already points at similar items. The pool is the mean over the slots or, with
        `slot_attention`, a softmax over the slots' last hidden states scored by each query
        token's state, so each of the M user vectors can follow a different interest and
        the instruction can steer which (`encode` then scales the pool by a gate read from
        the query token, so an objective such as serendipity can point away from the
        history). Rows without slots pool to zero.
        """
        b, m = queries.shape[0], queries.shape[1]
        if self.slot_query is None:
            logits = values.new_zeros(values.shape[0], m)
        else:
            states = hidden[batch.slot_rows, batch.slot_cols]  # [S, H]
            keys = self.slot_query(queries)[batch.slot_rows]  # [S, M, H]
            logits = torch.einsum("smh,sh->sm", keys, states) / math.sqrt(states.shape[1])
        rows = batch.slot_rows.unsqueeze(1).expand_as(logits)
        row_max = logits.new_full((b, m), -torch.inf).scatter_reduce(0, rows, logits, "amax", include_self=False)
        weights = (logits - row_max[batch.slot_rows]).exp()
        norm = weights.new_zeros(b, m).index_add(0, batch.slot_rows, weights)
        weights = (weights / norm[batch.slot_rows]).to(values.dtype)
        pooled = values.new_zeros(b, m, values.shape[1])
        return pooled.index_add(0, batch.slot_rows, weights.unsqueeze(-1) * values.unsqueeze(1))

    def similarity(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """max_m <u_m, w_i>, unscaled, for every (user, item): [B, N]."""
        return torch.einsum("bmd,nd->bmn", users, items.to(users.dtype)).amax(dim=1)

    def scores(self, users: torch.Tensor, items: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Retrieval logits scale * max_m <u_m, w_i> (+ the item prior <v, w_i>, + the item bias b_i): [B, N].

        `index`: the items' catalogue indices [N], which a model with `item_bias` needs."""
        logits = self.log_scale.exp() * self.similarity(users, items)
        if self.retrieval_prior is not None:
            logits = logits + self.retrieval_prior(items.to(users.dtype)).squeeze(-1)
        if self.item_bias is not None:
            logits = logits + self.bias_of(index).to(logits.dtype)
        return logits

    def query_keys(self, users: torch.Tensor) -> torch.Tensor:
        """Per-query keys [B, M, D+1] with <q_m, item_keys_i> = query m's logit for item i, so `scores` is
        max_m of an inner product: what an approximate nearest-neighbour index can search (see `item_keys`)."""
        q = self.log_scale.exp() * users
        if self.retrieval_prior is not None:
            q = q + self.retrieval_prior.weight[0].to(q.dtype)
        return torch.cat([q, q.new_ones(*q.shape[:-1], 1)], dim=-1)

    def item_keys(self, items: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Item keys [N, D+1]: the unit vector w_i and the item bias b_i (0 without one), `query_keys`' partner."""
        bias = self.bias_of(index).to(items.dtype) if self.item_bias is not None else items.new_zeros(len(items))
        return torch.cat([items, bias.unsqueeze(-1)], dim=-1)

    def bias_of(self, index: torch.Tensor | None, table: nn.Embedding | None = None) -> torch.Tensor:
        """The item bias b_i (or another per-item `table`'s value) of each catalogue index [N]; zero for items the
        model never trained on."""
        table = self.item_bias if table is None else table
        if index is None:
            option = "ctr_item_bias" if table is self.ctr_item_offset else "item_bias"
            raise ValueError(f"this model has a per-item table ({option}): pass the items' catalogue indices")
        trained = self.config.n_items_trained
        return table(index.clamp(max=max(trained, 1) - 1)).squeeze(-1) * (index < trained)

    @torch.no_grad()
    def init_item_bias(self, counts: torch.Tensor, eligible: torch.Tensor, first: int = 0) -> None:
        """Start b_i at log(1 + count_i) of the training targets, centred over the `eligible` items (those the
        training window could show); the rest, like items new since, start at 0: the average item. `first`:
        only rows from this index on (a warm start's new items; the parent's rows keep what they learned)."""
        logs = torch.log1p(counts.to(self.item_bias.weight.dtype))
        centre = logs[eligible].mean() if eligible.any() else logs.new_zeros(())
        start = torch.where(eligible, logs - centre, torch.zeros_like(logs))
        self.item_bias.weight[first:, 0] = start[first:]

    @staticmethod
    def history_vectors(slot_vectors: torch.Tensor, slot_rows: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Each row's mean history item vector, [n_rows, D], from its slots' unit vectors [S, D] (zero without history)."""
        sums = slot_vectors.new_zeros(n_rows, slot_vectors.shape[1]).index_add(0, slot_rows, slot_vectors)
        counts = torch.bincount(slot_rows, minlength=n_rows).clamp(min=1).to(sums.dtype)
        return sums / counts.unsqueeze(1)

    @staticmethod
    def text_affinity(catalog: ItemCatalog, slot_items: torch.Tensor, slot_rows: torch.Tensor,
                      items: torch.Tensor) -> torch.Tensor:
        """Each row's mean cosine similarity [len(items)] of its history items' frozen text embeddings (`slot_items`,
        rows `slot_rows`) to its item's (`items`); 0 without history or text: what `ctr_text_history` weighs."""
        def unit(index: torch.Tensor) -> torch.Tensor:
            return F.normalize(catalog.text[index].float(), dim=-1)
        return (URM.history_vectors(unit(slot_items), slot_rows, len(items)) * unit(items)).sum(dim=-1)

    def click_probability(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None,
                          index: torch.Tensor | None = None, text_affinity: torch.Tensor | None = None) -> torch.Tensor:
        """Calibrated P(click) for aligned (user, item) pairs; `history`: `history_vectors` of the pairs' rows;
        `index`: the items' catalogue indices (with `item_bias`); `text_affinity`: `text_affinity` of the pairs."""
        return torch.sigmoid(self.ctr_logit(users, items, history, index, text_affinity))

    def ctr_logit(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None,
                  index: torch.Tensor | None = None, text_affinity: torch.Tensor | None = None) -> torch.Tensor:
        """Click logit of aligned pairs: `vector_ctr_logit`, and with `ctr_text_history` `text_ctr_logit` on top."""
        logit = self.vector_ctr_logit(users, items, history, index)
        return logit if self.ctr_text_weight is None else self.text_ctr_logit(logit, text_affinity)

    def vector_ctr_logit(self, users: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None = None,
                         index: torch.Tensor | None = None) -> torch.Tensor:
        """Click logit from the vectors, users [B, M, D] and items [B, D]: a calibration of max_m <u_m, w_i>, plus
        the item prior, the weighted item bias of `index`, and with `ctr_history` the item's mean similarity to the
        history's items (on small logs it transfers to unseen impressions better than the user vectors alone)."""
        items = items.to(users.dtype)
        logit = self.ctr_weight * torch.einsum("bmd,bd->bm", users, items).amax(dim=1) + self.ctr_bias
        if self.ctr_prior is not None:
            logit = logit + self.ctr_prior(items).squeeze(-1)
        if self.item_bias is not None:
            logit = logit + self.ctr_item_bias_weight * self.bias_of(index).to(logit.dtype)
        if self.ctr_item_offset is not None:
            logit = logit + self.bias_of(index, self.ctr_item_offset).to(logit.dtype)
        if self.ctr_history_weight is None:
            return logit
        if history is None:
            raise ValueError("this model's CTR head reads the history: pass history_vectors of the pairs' rows")
        return logit + self.ctr_history_weight * (history.to(users.dtype) * items).sum(dim=-1)

    def text_head_parameters(self) -> list[nn.Parameter]:
        """The scalars of `text_ctr_logit` (none without `ctr_text_history`): the optimizer gives them
        `TEXT_HEAD_LR_SCALE` times the learning rate, without weight decay."""
        return [p for p in (self.ctr_text_weight, self.ctr_vector_weight, self.ctr_text_bias) if p is not None]

    def text_ctr_logit(self, vector_logit: torch.Tensor, text_affinity: torch.Tensor | None) -> torch.Tensor:
        """`ctr_text_history`'s click logit: a logistic regression over the vector head's logit and the pairs'
        `text_affinity`. Its loss reaches no vector (the logit is detached), so the vectors learn as without it."""
        if text_affinity is None:
            raise ValueError("this model's CTR head reads the history's texts: pass text_affinity of the pairs")
        return (self.ctr_vector_weight * vector_logit.detach()
                + self.ctr_text_weight * text_affinity.to(vector_logit.dtype) + self.ctr_text_bias)

    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token loss on the text after `<|lm|>` (labels already shifted by the collator)."""
        mask = labels != -100
        if self.lm_head is None or not mask.any():
            return hidden.sum() * 0.0
        return F.cross_entropy(self.lm_head(hidden[mask]).float(), labels[mask])

    # -- training losses --------------------------------------------------------------

    def retrieval_loss(self, users: torch.Tensor, targets: torch.Tensor, catalog: ItemCatalog,
                       sampling_probs: torch.Tensor | None, num_negatives: int) -> torch.Tensor:
        """Full softmax over the catalogue, or sampled softmax with logQ correction."""
        if sampling_probs is None:
            everything = torch.arange(len(catalog), device=targets.device)
            return F.cross_entropy(self.scores(users, self.item_vectors(catalog), everything).float(), targets)
        negatives = torch.multinomial(sampling_probs, num_negatives, replacement=True)
        candidates = torch.cat([targets, negatives])
        logits = self.scores(users, self.item_vectors(catalog, candidates), candidates).float()
        logits = logits - torch.log(sampling_probs[candidates] * num_negatives + 1e-12).unsqueeze(0)
        own = torch.arange(len(targets), device=targets.device)
        accidental = candidates.unsqueeze(0) == targets.unsqueeze(1)
        accidental[own, own] = False
        return F.cross_entropy(logits.masked_fill(accidental, -1e9), own)

    def joint_loss(self, users, hidden, batch: Batch, catalog: ItemCatalog, t: LossTargets, slot_vectors: torch.Tensor):
        """Retrieval + weighted CTR + weighted LM loss; each term only where the batch has examples.

        `slot_vectors`: `encode_with_slots`' unit vectors of the history's slots (the CTR history term reads them)."""
        parts = {}
        total = users.sum() * 0.0
        is_ctr = ~torch.isnan(t.labels)
        is_retrieval = ~is_ctr & (t.items >= 0)
        if is_retrieval.any():
            parts["retrieval"] = self.retrieval_loss(users[is_retrieval], t.items[is_retrieval], catalog,
                                                     t.sampling_probs, t.num_negatives)
            total = total + t.retrieval_weight * parts["retrieval"]
        if is_ctr.any():
            history = None
            if self.ctr_history_weight is not None:
                history = self.history_vectors(slot_vectors, batch.slot_rows, len(users))[is_ctr]
            shown, labels = t.items[is_ctr], t.labels[is_ctr]
            logits = self.vector_ctr_logit(users[is_ctr], self.item_vectors(catalog, shown), history, shown)
            parts["ctr"] = F.binary_cross_entropy_with_logits(logits.float(), labels)
            total = total + t.ctr_weight * parts["ctr"]
            if self.ctr_text_weight is not None:
                rows = is_ctr.nonzero().squeeze(1)
                ctr_slots = torch.isin(batch.slot_rows, rows)
                text = self.text_affinity(catalog, batch.slot_items[ctr_slots],
                                          torch.searchsorted(rows, batch.slot_rows[ctr_slots]), shown)
                parts["ctr_text"] = F.binary_cross_entropy_with_logits(self.text_ctr_logit(logits, text).float(), labels)
                total = total + t.ctr_weight * parts["ctr_text"]
        if t.lm_weight > 0 and batch.lm_labels is not None and self.lm_head is not None:
            parts["lm"] = self.lm_loss(hidden, batch.lm_labels)
            total = total + t.lm_weight * parts["lm"]
        return total, {k: float(v.detach()) for k, v in parts.items()}

    # -- persistence ----------------------------------------------------------------------

    def save_pretrained(self, directory: str, tokenizer: PreTrainedTokenizerBase | None = None,
                        catalog: ItemCatalog | None = None) -> None:
        """One directory: safetensors weights, config, tokenizer and the item catalogue, readable by the owner's group."""
        os.makedirs(directory, exist_ok=True)
        save_model(self, os.path.join(directory, WEIGHTS))
        with open(os.path.join(directory, CONFIG), "w") as f:
            json.dump(asdict(self.config), f, indent=1, sort_keys=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        if catalog is not None:
            catalog.save(directory)
        share_with_group(directory)  # another service account loads it from shared storage

    @classmethod
    def from_pretrained(cls, directory: str, device: str | torch.device = "cpu") -> "URM":
        """Rebuild from `save_pretrained`'s directory; loads safetensors only, never pickle."""
        path = os.path.join(directory, WEIGHTS)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model directory {directory} has no {WEIGHTS}")
        with open(os.path.join(directory, CONFIG)) as f:
            config = URMConfig(**json.load(f))
        model = cls(config)
        missing, unexpected = load_model(model, path, strict=True, device=str(device))
        return model.to(device).eval()


def load_tokenizer(directory: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def control_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids of the slot, query and LM tokens, which must each be a single special token."""
    ids = {}
    for name, token in (("item_slot_id", ITEM_SLOT), ("query_token_id", QUERY_TOKEN), ("lm_token_id", LM_TOKEN)):
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no special token {token}")
        ids[name] = int(tid)
    return ids
