"""VQ-Rec (Hou et al., WWW 2023): a sequential recommender over text codes, transferable across domains.

An item is the mean of D code embeddings, ``v_i = mean_k E_k[c_ik]``, looked up from D randomly
initialised tables ``E_k`` (M x d) with the item's OPQ codes ``c_i`` (not the OPQ centroids). A
SASRec-style Transformer reads the sequence of v's; the user state is the last position's output;
an item's score is the cosine of the user state and the item's representation over a temperature.

Fine-tuning on a new domain may first learn, per table, a permutation of its rows (``E_hat_k =
Pi_k E_k``): a Gumbel-Sinkhorn relaxation, applied as a *hard* permutation in the forward pass with
straight-through gradients to the soft one (the released code's ``ceil`` gives it no gradient).
The hard permutation is re-solved each step (Hungarian algorithm per table). With full-scale Gumbel
noise the hard permutation is close to random at every step while the logits are small, and the loss
does not move; the noise is therefore scaled (``gumbel_noise``, default 0.1) and stage 1 uses its own,
larger learning rate. On a planted test (a pre-trained model whose target codes are a known
permutation of its own) this setting lowers the training loss and improves validation NDCG, where
noise 1.0 at lr 1e-3 leaves both flat (experiments/results/bench-vqrec-permutation.jsonl).

The codes live in a non-persistent buffer: the same weights serve any catalog whose items have codes
of the same layout (D tables of M codes), which is what makes transfer and cold start possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from sidrec.models.sasrec import Block
from sidrec.utils.dist import gather_rows


@dataclass(frozen=True, kw_only=True)
class VQRecConfig:
    RENAMED: ClassVar[dict[str, str]] = {"max_len": "max_history", "n_codes": "n_levels", "code_size": "codebook_size"}  # keys of sidrec <= 0.2 run configs
    n_levels: int = 32  # D: codes per item (OPQ sub-spaces)
    codebook_size: int = 256  # M: codes per table
    dim: int = 300  # code embedding / hidden width (official default)
    n_layers: int = 2
    n_heads: int = 2
    inner: int = 256  # feed-forward width
    dropout: float = 0.5
    temperature: float = 0.07
    max_history: int = 50
    sinkhorn_iters: int = 3
    sinkhorn_tau: float = 0.7
    gumbel_noise: float = 0.1  # scale of the Gumbel noise while learning permutations (1 = Mena et al.; see below)
    # a learned vector (from zero) for each training item whose D codes equal another item's: code twins get the
    # same text vector and tie for every user (on Scientific 8% of the items); items added later get none, so
    # cold start stays text-only. Trained with the code tables in fine-tuning (experiments/bench/vqrec_code_ties.py measures ties).
    # On by default since sidrec 0.4 (Scientific, 3 seeds: N@10 +18-23%, R@10 unchanged or better); runs written
    # before the option existed load with it off. Pre-training never uses them (twins of the mixed catalog)
    twin_vectors: bool = True


def twin_index(codes: torch.Tensor) -> torch.Tensor:
    """(n + 1,) index of each item's twin vector: 1.. for items whose whole code row equals another item's, 0 for
    the rest and for the padding row 0."""
    c = codes[1:].cpu().numpy()
    idx = np.zeros(len(codes), dtype=np.int64)
    if len(c):
        _, inv, cnt = np.unique(c, axis=0, return_inverse=True, return_counts=True)
        twin = cnt[inv.ravel()] > 1
        idx[1:][twin] = np.arange(1, int(twin.sum()) + 1)
    return torch.from_numpy(idx).to(codes.device)


def sinkhorn(log_alpha: torch.Tensor, iters: int) -> torch.Tensor:
    """Alternating row/column normalisation in log space: (..., M, M) -> doubly stochastic (..., M, M)."""
    for _ in range(iters):
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-1, keepdim=True)
        log_alpha = log_alpha - torch.logsumexp(log_alpha, dim=-2, keepdim=True)
    return log_alpha.exp()


def gumbel_sinkhorn(logits: torch.Tensor, *, tau: float, iters: int, noise: float = 1.0) -> torch.Tensor:
    """Soft permutation matrices from (D, M, M) logits (Mena et al. 2018), Gumbel noise scaled by ``noise``."""
    if noise:
        u = torch.rand_like(logits).clamp(1e-10, 1 - 1e-10)
        logits = logits - noise * torch.log(-torch.log(u))
    return sinkhorn(logits / tau, iters)


def hard_permutation(scores: torch.Tensor) -> torch.Tensor:
    """The permutation matrix of maximum total score for each (M, M) slice (Hungarian algorithm)."""
    s = scores.detach().float().cpu().numpy()
    out = np.zeros_like(s, dtype=np.float32)
    for k in range(s.shape[0]):  # one assignment per code table (D of them), not per item
        rows, cols = linear_sum_assignment(s[k], maximize=True)
        out[k, rows, cols] = 1.0
    return torch.from_numpy(out).to(scores.device, scores.dtype)


def straight_through_permutation(logits: torch.Tensor, *, tau: float, iters: int, noise: float) -> torch.Tensor:
    """Hard permutation forward, gradient of the Gumbel-Sinkhorn soft permutation backward."""
    soft = gumbel_sinkhorn(logits, tau=tau, iters=iters, noise=noise)
    hard = hard_permutation(soft)
    return hard + soft - soft.detach()


class VQRec(nn.Module):
    def __init__(self, cfg: VQRecConfig, codes: torch.Tensor | np.ndarray):
        super().__init__()
        self.cfg = cfg
        D, M = cfg.n_levels, cfg.codebook_size
        # item reps are means of D codes: their spread is the tables' / sqrt(D); tables at std 0.02 * sqrt(D) keep
        # items at the position embeddings' scale (0.02, as in the official code), so LayerNorm does not drown them
        self.code_emb = nn.Parameter(torch.randn(D, M, cfg.dim) * 0.02 * D ** 0.5)
        self.register_buffer("codes", torch.zeros(1, D, dtype=torch.long), persistent=False)
        self.twin_emb: nn.Parameter | None = None
        self.set_codes(codes)
        if cfg.twin_vectors:
            self.register_buffer("twin_idx", twin_index(self.codes), persistent=False)
            self.twin_emb = nn.Parameter(torch.zeros(int(self.twin_idx.max()) + 1, cfg.dim))
        self.perm_logits: nn.Parameter | None = None
        self.pos_emb = nn.Embedding(cfg.max_history, cfg.dim)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.ln_in = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(dim=cfg.dim, n_heads=cfg.n_heads, dropout=cfg.dropout, inner=cfg.inner)
                                    for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.dim)

    # ---- codes and item representations -------------------------------------------------------------
    def set_codes(self, codes: torch.Tensor | np.ndarray) -> None:
        """Codes of the catalog, (n_items + 1, D) with row 0 the padding item (its codes are ignored)."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if codes.ndim != 2 or codes.shape[1] != self.cfg.n_levels:
            raise ValueError(f"codes must be (n_items + 1, {self.cfg.n_levels}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cfg.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.cfg.codebook_size})")
        self.codes = codes.to(self.code_emb.device)
        if self.twin_emb is not None:  # items added after training (cold start) have no twin vector
            n = len(codes) - len(self.twin_idx)
            self.twin_idx = torch.cat([self.twin_idx[:len(codes)], self.twin_idx.new_zeros(max(0, n))])

    @property
    def n_items(self) -> int:
        return len(self.codes) - 1

    def enable_permutation(self) -> None:
        """Add learnable permutation logits, one (M, M) matrix per code table."""
        D, M = self.cfg.n_levels, self.cfg.codebook_size
        self.perm_logits = nn.Parameter(torch.randn(D, M, M, device=self.code_emb.device) * 0.01)

    def bake_permutation(self) -> None:
        """Apply the current hard permutation to the tables and drop the logits (before stage 2)."""
        if self.perm_logits is None:
            return
        with torch.no_grad():
            self.code_emb.copy_(hard_permutation(self.perm_logits) @ self.code_emb)
        self.perm_logits = None

    def tables(self) -> torch.Tensor:
        """The code tables in use, (D, M, dim): permuted when a permutation is being learned."""
        if self.perm_logits is None:
            return self.code_emb
        P = straight_through_permutation(self.perm_logits, tau=self.cfg.sinkhorn_tau, iters=self.cfg.sinkhorn_iters,
                                         noise=self.cfg.gumbel_noise if self.training else 0.0)
        return P @ self.code_emb

    def reps_from_codes(self, codes: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) codes -> (..., dim) mean of the D code embeddings."""
        tables = self.tables() if tables is None else tables
        D, M = self.cfg.n_levels, self.cfg.codebook_size
        flat = codes.reshape(-1, D) + torch.arange(D, device=codes.device) * M
        v = F.embedding_bag(flat, tables.reshape(D * M, -1), mode="mean")
        return v.reshape(*codes.shape[:-1], -1)

    def item_vectors(self, idx: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
        """(...) item indices -> (..., dim): the mean of their code embeddings, plus their twin vector if any."""
        v = self.reps_from_codes(self.codes[idx], tables)
        if self.twin_emb is not None:
            t = self.twin_idx[idx]
            v = v + self.twin_emb[t] * (t > 0).unsqueeze(-1).to(v.dtype)
        return v

    def item_reps(self, tables: torch.Tensor | None = None) -> torch.Tensor:
        """Representations of every catalog item, (n_items + 1, dim); row 0 is padding."""
        if self.twin_emb is None:
            return self.reps_from_codes(self.codes, tables)
        return self.item_vectors(torch.arange(len(self.codes), device=self.codes.device), tables)

    # ---- sequence encoder ----------------------------------------------------------------------------
    def forward(self, seq: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
        """seq (B, L) item indices, left-padded with 0 -> hidden states (B, L, dim)."""
        B, L = seq.shape
        if L > self.cfg.max_history:
            seq, L = seq[:, -self.cfg.max_history:], self.cfg.max_history
        pad = seq == 0
        x = self.item_vectors(seq, tables) + self.pos_emb.weight[-L:][None]
        x = self.drop(self.ln_in(x)) * (~pad)[..., None]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), 1)
        for blk in self.blocks:
            x = blk(x, causal, pad)
        return self.ln(x)

    def logits(self, states: torch.Tensor, reps: torch.Tensor) -> torch.Tensor:
        return F.normalize(states, dim=-1) @ F.normalize(reps, dim=-1).T / self.cfg.temperature

    def score(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores of every catalog item (B, n_items + 1) for the next position after ``seq``."""
        tables = self.tables()
        return self.logits(self.forward(seq, tables)[:, -1], self.item_reps(tables))

    def loss(self, seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-item cross-entropy over the whole catalog at every non-padding position."""
        tables = self.tables()
        h = self.forward(seq, tables)
        mask = targets > 0
        logits = self.logits(h[mask], self.item_reps(tables))
        logits[:, 0] = -torch.inf
        return F.cross_entropy(logits, targets[mask])

    def contrastive_loss(self, seq: torch.Tensor, targets: torch.Tensor, *, rho: float) -> torch.Tensor:
        """Pre-training loss: in-batch (mixed-domain) negatives plus one semi-synthetic negative per target
        (each of its codes replaced by a uniformly random code with probability ``rho``; 0 = none).

        Items appearing more than once among the batch targets are not used as each other's negatives.
        Under torchrun the negatives are the targets of the whole global batch (gathered from every rank, the
        gradient flowing back to their rank), as in one process.
        """
        tables = self.tables()
        h = self.forward(seq, tables)
        mask = targets > 0
        s, t = h[mask], targets[mask]  # (N, dim), (N,)
        tc = self.codes[t]  # (N, D)
        v, off = gather_rows(self.reps_from_codes(tc, tables))  # (N_all, dim): every rank's targets
        t_all, _ = gather_rows(t)
        own = torch.arange(len(t), device=t.device) + off  # column of each state's own target
        logits = self.logits(s, v)  # (N, N_all): target j' for state j
        same = t[:, None] == t_all[None, :]
        same[torch.arange(len(t), device=t.device), own] = False
        logits = logits.masked_fill(same, -torch.inf)
        if rho > 0:
            swap = torch.rand(tc.shape, device=tc.device) < rho
            fake = torch.where(swap, torch.randint_like(tc, self.cfg.codebook_size), tc)
            v_fake = self.reps_from_codes(fake, tables)
            fake_logit = (F.normalize(s, dim=-1) * F.normalize(v_fake, dim=-1)).sum(-1) / self.cfg.temperature
            logits = torch.cat([logits, fake_logit[:, None]], dim=1)
        return F.cross_entropy(logits, own)
