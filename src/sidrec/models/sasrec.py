"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the last N items.

Trained here with full-softmax cross-entropy over all items by default (the stronger recipe
reported since), or with the paper's BCE against one sampled negative per position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sidrec.config import from_dict
from sidrec.utils.artifacts import load_model_weights, read_json, verify


@dataclass(frozen=True, kw_only=True)
class SASRecConfig:
    RENAMED: ClassVar[dict[str, str]] = {"max_len": "max_history"}  # keys of sidrec <= 0.2 run configs
    n_items: int = 0  # catalog size (index 0 is padding); set from the dataset
    dim: int = 64  # item embedding / hidden width (LETTER's CF embeddings use 32)
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.3
    max_history: int = 20  # history cut: the last N items
    loss: Literal["ce", "bce"] = "ce"  # full-softmax cross-entropy, or BCE with one sampled negative


class Block(nn.Module):
    """Pre-LN transformer block with causal self-attention."""

    def __init__(self, *, dim: int, n_heads: int, dropout: float, inner: int = 0):
        super().__init__()
        inner = inner or dim
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=causal, need_weights=False)
        x = x + self.drop(a)
        x = x + self.drop(self.ff(self.ln2(x)))
        return x * (~pad)[..., None]


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_history, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(dim=cfg.dim, n_heads=cfg.n_heads, dropout=cfg.dropout)
                                    for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=cfg.dim ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) item indices, left-padded with 0 -> hidden states (B, L, D)."""
        B, L = seq.shape
        pad = seq == 0
        x = self.item_emb(seq) * self.cfg.dim ** 0.5 + self.pos_emb.weight[-L:][None]
        x = self.drop(x) * (~pad)[..., None]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)
        for blk in self.blocks:
            x = blk(x, causal, pad)
        return self.ln(x)

    def score(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores of every item (B, n_items + 1) for the next position after ``seq``."""
        return self.forward(seq)[:, -1] @ self.item_emb.weight.T

    def loss(self, seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-item loss over all non-padding positions; ``targets`` (B, L), 0 = no target."""
        h = self.forward(seq)
        mask = targets > 0
        h, t = h[mask], targets[mask]  # (N, D), (N,)
        if self.cfg.loss == "ce":
            logits = h @ self.item_emb.weight.T  # (N, n_items + 1)
            logits[:, 0] = -torch.inf
            return F.cross_entropy(logits, t)
        neg = torch.randint(1, self.cfg.n_items + 1, t.shape, device=t.device)
        pos_s = (h * self.item_emb(t)).sum(-1)
        neg_s = (h * self.item_emb(neg)).sum(-1)
        return F.binary_cross_entropy_with_logits(torch.cat([pos_s, neg_s]),
                                                  torch.cat([torch.ones_like(pos_s), torch.zeros_like(neg_s)]))


def load_sasrec(run: str | Path, device: torch.device | str = "cpu") -> SASRec:
    verify(Path(run))
    cfg = read_json(Path(run) / "config.json")["model"]
    m = SASRec(from_dict(SASRecConfig, cfg))
    load_model_weights(m, str(Path(run) / "model.safetensors"))
    return m.to(device).eval()
