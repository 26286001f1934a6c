"""LC-Rec-style generator (Zheng et al. 2024; LETTER's second instantiation): a decoder-only causal language
model (Hugging Face ``AutoModelForCausalLM``: Llama, Qwen2, ...) that reads a user's history as semantic-ID
tokens and generates the next item's ID, decoded by the shared trie-constrained beam search.

This first version trains from scratch on an ID-token vocabulary: the built-in ``tiny-llama`` and
``tiny-qwen2`` configurations (tests, CPU, decoder-only baselines). Sequence: the left-padded history's
tokens, ``SEP``, the target's tokens; the loss (ranking-guided, LETTER's tau) is on the target tokens only.
Pretrained LLMs with a text prompt and LoRA are the next step (issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from sidrec.models.tiger import PAD, Vocab, ranking_guided_loss

SEP = 1  # "the answer starts": the token after the history (Vocab's id 1)

BUILTIN = {
    "tiny-llama": ("llama", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2)),
    "tiny-qwen2": ("qwen2", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2)),
}


@dataclass(frozen=True, kw_only=True)
class LCRecConfig:
    model: Literal["tiny-llama", "tiny-qwen2"] = "tiny-llama"
    hidden_size: int | None = None  # None = the built-in's
    num_hidden_layers: int | None = None
    dropout: float = 0.1  # attention dropout of the HF config
    max_history: int | None = None  # None = the dataset's (stats.json)
    temperature: float = 1.0  # LETTER's ranking-guided loss (1 = plain cross-entropy)


def build_causal_lm(cfg: LCRecConfig, vocab_size: int, max_positions: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    from sidrec.errors import SidrecError

    if cfg.model not in BUILTIN:
        raise SidrecError(f"unknown LC-Rec model {cfg.model!r}; choose one of {sorted(BUILTIN)}")
    arch, shape = BUILTIN[cfg.model]
    shape = {**shape, **{k: v for k, v in (("hidden_size", cfg.hidden_size),
                                          ("num_hidden_layers", cfg.num_hidden_layers)) if v is not None}}
    conf = AutoConfig.for_model(arch, vocab_size=vocab_size, max_position_embeddings=max_positions,
                                attention_dropout=cfg.dropout, pad_token_id=PAD, bos_token_id=SEP, eos_token_id=SEP,
                                tie_word_embeddings=True, **shape)
    return AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa")


class LCRec(nn.Module):
    """A ``Generator`` (models/generator.py) on a causal LM."""

    kind = "lcrec"

    def __init__(self, cfg: LCRecConfig, vocab: Vocab, codes: np.ndarray):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        L = codes.shape[1]
        self.lm = build_causal_lm(cfg, vocab.size, cfg.max_history * L + L + 2)
        import inspect

        # transformers renamed the KV-cache argument (past_key_values -> cache); use what this version has
        self._cache_arg = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
        self.register_buffer("item_tok", vocab.item_tokens(codes), persistent=False)

    @property
    def id_length(self) -> int:
        return self.item_tok.shape[1]

    def _prompt(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.item_tok[hist].flatten(1)
        ids = torch.cat([ids, torch.full_like(ids[:, :1], SEP)], 1)
        return ids, ids != PAD

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, **kw):
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        return self.lm(input_ids=ids, attention_mask=mask.long(), position_ids=pos, **kw)

    def teacher_forced(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor):
        """Logits (B, L, V) of the target's ID tokens given the history and the true prefix, and labels (B, L)."""
        ids, mask = self._prompt(hist)
        labels = self.item_tok[target]
        L = labels.shape[1]
        full = torch.cat([ids, labels[:, :-1]], 1)
        fmask = torch.cat([mask, torch.ones_like(labels[:, :-1], dtype=torch.bool)], 1)
        logits = self._run(full, fmask, use_cache=False).logits
        return logits[:, -L:], labels

    def forward(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, labels = self.teacher_forced(users, hist, target)
        return ranking_guided_loss(logits, labels, self.cfg.temperature)

    # the decoding hooks of the generator contract
    def decode_start(self, users: torch.Tensor, hist: torch.Tensor) -> dict:
        from transformers import DynamicCache

        ids, mask = self._prompt(hist)
        out = self._run(ids, mask, use_cache=True, **{self._cache_arg: DynamicCache()})
        return {"cache": getattr(out, self._cache_arg), "first": out.logits[:, -1], "mask": mask,
                "pos": (mask.long().sum(1) - 1)}

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        if "first" in state:  # the prompt's last position already predicted level 0: expand to G beams
            G = tokens.shape[0] // state["first"].shape[0]
            state["cache"].batch_repeat_interleave(G)
            return state["first"].repeat_interleave(G, 0), {
                "cache": state["cache"], "mask": state["mask"].repeat_interleave(G, 0),
                "pos": state["pos"].repeat_interleave(G, 0)}
        mask = torch.cat([state["mask"], torch.ones_like(tokens, dtype=torch.bool)], 1)
        pos = state["pos"] + 1
        out = self.lm(input_ids=tokens, attention_mask=mask.long(), position_ids=pos[:, None], use_cache=True,
                      **{self._cache_arg: state["cache"]})
        return out.logits[:, -1], {"cache": getattr(out, self._cache_arg), "mask": mask, "pos": pos}

    def decode_reorder(self, state: dict, index: torch.Tensor) -> dict:
        state["cache"].reorder_cache(index)
        return {**state, "mask": state["mask"][index], "pos": state["pos"][index]}
