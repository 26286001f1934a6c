"""RPG-style parallel generator (Hou et al., KDD 2025, "Generating Long Semantic IDs in Parallel for
Recommendation"): items carry long unordered codes (OPQ: 32 digits of 256 codes), a causal transformer reads
each history item as the mean of its digits' token embeddings, and one pass predicts every digit of the next
item at once (a residual head per digit, cosine logits against that digit's token embeddings at a temperature).

An item's score is the sum of its digits' log-probabilities, so the whole catalog (items added later
included) is ranked exactly by one gather per digit: one forward pass per user, no beam. (RPG walks a graph of
items with similar codes instead, for catalogs too large to score; at sidrec's scales the exact ranking is
cheaper than the walk and never misses an item.) The beam-search hooks are there too (each level's logits
are the digit's, whatever came before), so sampling and the trie-constrained paths work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sidrec.errors import SidrecError
from sidrec.models.tiger import Vocab
from sidrec.utils.artifacts import load_model_weights


@dataclass(frozen=True, kw_only=True)
class RPGConfig:
    d_model: int = 256  # width of the token embeddings and the transformer
    n_layers: int = 2  # causal transformer blocks
    n_heads: int = 4  # attention heads
    d_ff: int = 1024  # feed-forward width
    dropout: float = 0.1  # on embeddings, attention and residual branches
    temperature: float = 0.03  # temperature of the digits' cosine logits (RPG's README recipe: 0.03)
    max_history: int | None = None  # history cut, the last N items (None: the dataset's, from stats.json)
    spare_suffixes: int = 16  # room on an appended collision level for items added after training (cold start)
    sequence_loss: bool = False  # each training sequence once, a loss at every position (not one sample per prefix)
    # (RPG's and SASRec's form: the transformer runs once per sequence); positions then count from the first
    # item, so each position's state is the one its own prefix gives at inference

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise SidrecError(f"rpg: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.temperature <= 0:
            raise SidrecError(f"rpg: temperature must be > 0, got {self.temperature}")


class _Block(nn.Module):
    """Pre-LN causal self-attention block; padded keys are masked, so cutting left padding is exact."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, T, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class RPG(nn.Module):
    """A ``Generator`` (models/generator.py) that predicts all ID tokens of the next item in parallel and
    ranks the catalog exactly (``item_log_probs``)."""

    kind = "rpg"

    def __init__(self, cfg: RPGConfig, vocab: Vocab, codes: np.ndarray):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        m, K = len(vocab.level_sizes), max(vocab.level_sizes)
        d = cfg.d_model
        self.register_buffer("item_tok", vocab.item_tokens(codes), persistent=False)
        # the vocabulary ids of each digit's codes (m, K); levels smaller than K are padded and masked
        k = torch.arange(K)
        sizes = torch.as_tensor(vocab.level_sizes)
        self.register_buffer("digit_tok", torch.as_tensor(vocab.offsets)[:, None] + k.clamp(max=sizes[:, None] - 1),
                             persistent=False)
        self.register_buffer("digit_pad", k[None, :] >= sizes[:, None], persistent=False)
        self.tok = nn.Embedding(vocab.size, d)
        self.pos = nn.Embedding(cfg.max_history, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.d_ff, cfg.dropout) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(d)
        # one residual head per digit, x + SiLU(W_j x + b_j), W_j zero at init (every head starts as the identity)
        self.head_w = nn.Parameter(torch.zeros(m, d, d))
        self.head_b = nn.Parameter(torch.zeros(m, d))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    @property
    def id_length(self) -> int:
        return self.item_tok.shape[1]

    def _hidden(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (B, H) left-padded item indices -> every position's final hidden state (B, H, d)."""
        B, H = hist.shape
        if H > self.cfg.max_history:
            hist = hist[:, -self.cfg.max_history:]
            H = self.cfg.max_history
        # each item = the mean of its digits' token embeddings (one bag per history slot, nothing materialised)
        x = F.embedding_bag(self.item_tok[hist.reshape(-1)], self.tok.weight, mode="mean").view(B, H, -1)
        if self.cfg.sequence_loss:  # positions counted from the first item: a position's state is its prefix's
            x = x + self.pos(((hist > 0).cumsum(1) - 1).clamp(min=0))
        else:  # counted from the end (the last item always at the same position)
            x = x + self.pos.weight[-H:][None]
        x = self.drop(x)
        pad = hist == 0
        i = torch.arange(H, device=hist.device)
        blocked = (i[None, :] > i[:, None])[None] | pad[:, None, :]  # future or padded keys
        blocked = blocked & ~torch.eye(H, dtype=torch.bool, device=hist.device)[None]  # a padded query sees itself
        bias = torch.zeros(blocked.shape, device=hist.device).masked_fill(blocked, float("-inf"))[:, None]
        for blk in self.blocks:
            x = blk(x, bias)
        return self.ln(x)

    def _heads(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden states -> (..., m, d) unit-norm states, one per digit."""
        s = h[..., None, :] + F.silu(torch.einsum("...d,mde->...me", h, self.head_w) + self.head_b)
        return F.normalize(s, dim=-1)

    def _logits(self, s: torch.Tensor) -> torch.Tensor:
        """(..., m, d) digit states -> (..., m, K) cosine / temperature to each digit's codes (padding codes -inf)."""
        e = F.normalize(self.tok.weight[self.digit_tok], dim=-1)  # (m, K, d)
        with torch.autocast(s.device.type, enabled=False):  # float32: at 1 / 0.03 a bf16 error counts
            logits = torch.einsum("...md,mkd->...mk", s.float(), e.float()) / self.cfg.temperature
        return logits.masked_fill(self.digit_pad, float("-inf"))

    def digit_logits(self, hist: torch.Tensor) -> torch.Tensor:
        """(B, m, K) logits of each digit of the next item (histories are left-padded: the last column is the
        latest item)."""
        return self._logits(self._heads(self._hidden(hist)[:, -1]))

    def forward(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean over digits of the cross-entropy of the target item's code (RPG's multi-token loss); with
        ``sequence_loss``, in training, the mean over every position of ``hist`` + ``target`` (the item after each
        history item) of that loss."""
        if not (self.cfg.sequence_loss and self.training):
            logits = self.digit_logits(hist)
            labels = self.item_tok[target] - self.digit_tok[:, 0]  # (B, m) codes within each digit
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        hist = hist[:, -self.cfg.max_history:]
        nxt = torch.cat([hist[:, 1:], target[:, None]], 1)  # (B, H): the item after each position
        labels = (self.item_tok[nxt] - self.digit_tok[:, 0]).masked_fill((hist == 0)[..., None], -100)
        logits = self._logits(self._heads(self._hidden(hist)))  # (B, H, m, K)
        return F.cross_entropy(logits.flatten(0, 2), labels.flatten(), ignore_index=-100)

    def teacher_forced(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor):
        """Logits (B, m, V) of the target items' ID tokens (each digit's outside its own codes -inf) and the labels
        (B, m): the contract's form; the digits do not depend on each other, so there is nothing to force."""
        lp = self.digit_logits(hist)
        out = torch.full((*lp.shape[:2], self.vocab.size), float("-inf"), device=lp.device)
        # padded codes repeat a level's last token id with -inf: the max keeps the real logit
        out.scatter_reduce_(2, self.digit_tok[None].expand(lp.shape[0], -1, -1), lp, reduce="amax")
        return out, self.item_tok[target]

    @torch.no_grad()
    def item_log_probs(self, users: torch.Tensor, hist: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """log P(item | history) of every item in the catalog, items added later included (B, n_items + 1; column
        0, padding, -inf): the sum of its digits' log-probabilities (of its first ``levels`` digits: the score of
        an item whose last digit, a collision suffix, the model never saw for it)."""
        return self.score_digits(self.digit_log_probs(hist), levels)

    def digit_log_probs(self, hist: torch.Tensor) -> torch.Tensor:
        """(B, m, K) log-probabilities of each digit's codes for the next item (padding codes -inf)."""
        return torch.log_softmax(self.digit_logits(hist), -1)

    def score_digits(self, lp: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Every item's score (B, n_items + 1; column 0 -inf) from digit log-probabilities ``lp`` (B, m, K): the sum
        over its first ``levels`` (default all) digits."""
        m, K = lp.shape[1:]
        flat = (self.item_tok - self.digit_tok[:, 0]).clamp(min=0) + torch.arange(m, device=lp.device) * K
        flat = flat[:, :levels]
        # a bag of m rows of the (m K, B) log-probability table per item: (n + 1, B), summed
        out = F.embedding_bag(flat, lp.reshape(lp.shape[0], -1).T.contiguous(), mode="sum").T
        out[:, 0] = float("-inf")
        return out

    # the beam-search hooks of the generator contract: level t's logits are digit t's, whatever came before
    def decode_start(self, users: torch.Tensor, hist: torch.Tensor) -> dict:
        return {"lp": self.digit_log_probs(hist), "t": 0}

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        lp, t = state["lp"], state["t"]
        G = tokens.shape[0] // lp.shape[0]
        out = torch.full((tokens.shape[0], self.vocab.size), float("-inf"), device=lp.device)
        real = ~self.digit_pad[t]
        out[:, self.digit_tok[t][real]] = lp[:, t][:, real].repeat_interleave(G, 0)
        return out, {**state, "t": t + 1}

    def decode_reorder(self, state: dict, index: torch.Tensor) -> dict:
        return state

    def load_weights(self, path: str) -> None:
        load_model_weights(self, path)

