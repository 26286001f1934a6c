"""A lean T5 encoder-decoder on ``scaled_dot_product_attention``.

The math is that of Hugging Face's ``T5ForConditionalGeneration`` (T5 v1.0 layout as TIGER uses it):
RMS layer norms without bias, unscaled dot-product attention with T5's bucketed relative position bias
(one table per stack, shared by its layers) added as a float mask, ReLU feed-forward, dropout where T5
has it, tied input/output embeddings with the decoder output scaled by ``d_model ** -0.5``. Same
parameter shapes and initialisation, so a model converted from an HF T5 (``hf_to_lean``) gives the same
logits (tested), and old sidrec runs trained on HF T5 load into it.

Why our own: the training step of a 4.6M-parameter TIGER is launch-bound. This module has no
cache objects, no Python branches on shapes and no host syncs in ``forward``, so ``torch.compile``
turns it into a few fused kernels; incremental decoding keeps its own small per-layer cache and runs
cross-attention once per user (all beams of a user attend to the same encoder states), instead of
repeating the encoder output ``beam`` times.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

NEG = -1e9  # additive mask value (finite, so fully padded rows stay NaN-free in bf16)
BUCKETS, MAX_DISTANCE = 32, 128  # T5 defaults


def relative_buckets(rel: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """T5's bucketing of relative positions (key - query): exact below 8 (16 one-sided), log-spaced to 128."""
    n = BUCKETS
    out = torch.zeros_like(rel)
    if bidirectional:
        n //= 2
        out = out + (rel > 0).long() * n
        rel = rel.abs()
    else:
        rel = -torch.clamp(rel, max=0)
    exact = n // 2
    large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(MAX_DISTANCE / exact)
                     * (n - exact)).long()
    return out + torch.where(rel < exact, rel, large.clamp(max=n - 1))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps))


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_kv: int, dropout: float):
        super().__init__()
        inner = n_heads * d_kv
        self.h, self.dk, self.p = n_heads, d_kv, dropout
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)

    def heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, h*dk) -> (B, h, T, dk)
        return x.view(x.shape[0], x.shape[1], self.h, self.dk).transpose(1, 2)

    def kv(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.k(src)), self.heads(self.v(src))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q = self.heads(self.q(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0,
                                             dropout_p=self.p if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))

    def forward(self, x: torch.Tensor, src: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.attend(x, *self.kv(src), bias)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.wi = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.drop(F.relu(self.wi(x))))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_kv: int, d_ff: int, dropout: float, cross: bool,
                 attn_dropout: float):
        super().__init__()
        self.attn_norm = RMSNorm(d_model)
        self.attn = Attention(d_model, n_heads, d_kv, attn_dropout)
        if cross:
            self.cross_norm = RMSNorm(d_model)
            self.cross = Attention(d_model, n_heads, d_kv, attn_dropout)
        self.ff_norm = RMSNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)


class Stack(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_kv: int, d_ff: int, dropout: float,
                 decoder: bool, attn_dropout: float):
        super().__init__()
        self.decoder = decoder
        self.rel = nn.Embedding(BUCKETS, n_heads)
        self.layers = nn.ModuleList(Block(d_model, n_heads, d_kv, d_ff, dropout, decoder, attn_dropout)
                                    for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def position_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(1, heads, Tq, Tk) bias from the relative positions of queries and keys."""
        b = relative_buckets(k_pos[None, :] - q_pos[:, None], bidirectional=not self.decoder)
        return self.rel(b).permute(2, 0, 1)[None]


class EncoderDecoder(nn.Module):
    def __init__(self, *, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_kv: int, d_ff: int,
                 dropout: float, attn_dropout: float | None = None):
        """``attn_dropout``: dropout on attention probabilities (None = ``dropout``, as T5). With 0 the fused
        attention kernels apply in training; with > 0 SDPA falls back to its materialised (math) path."""
        super().__init__()
        self.d_model = d_model
        ad = dropout if attn_dropout is None else attn_dropout
        self.encoder = Stack(n_layers, d_model, n_heads, d_kv, d_ff, dropout, decoder=False, attn_dropout=ad)
        self.decoder = Stack(n_layers, d_model, n_heads, d_kv, d_ff, dropout, decoder=True, attn_dropout=ad)
        self.shared = nn.Embedding(vocab_size, d_model)
        self.reset_parameters(n_heads, d_kv, d_ff)

    @torch.no_grad()
    def reset_parameters(self, n_heads: int, d_kv: int, d_ff: int) -> None:
        """T5's initialisation (HF ``T5PreTrainedModel._init_weights``, factor 1)."""
        d = self.d_model
        nn.init.normal_(self.shared.weight, std=1.0)
        for m in self.modules():
            if isinstance(m, Attention):
                nn.init.normal_(m.q.weight, std=(d * d_kv) ** -0.5)
                nn.init.normal_(m.k.weight, std=d ** -0.5)
                nn.init.normal_(m.v.weight, std=d ** -0.5)
                nn.init.normal_(m.o.weight, std=(n_heads * d_kv) ** -0.5)
            elif isinstance(m, FeedForward):
                nn.init.normal_(m.wi.weight, std=d ** -0.5)
                nn.init.normal_(m.wo.weight, std=d_ff ** -0.5)
            elif isinstance(m, Stack):
                nn.init.normal_(m.rel.weight, std=d ** -0.5)

    @staticmethod
    def pad_bias(mask: torch.Tensor) -> torch.Tensor:
        """(B, S) bool (True = token) -> (B, 1, 1, S) additive mask."""
        return torch.where(mask, 0.0, NEG)[:, None, None, :]

    def encode(self, ids: torch.Tensor, mask: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states of ``ids``; ``emb`` (B, S, d): input embeddings to use instead of ``shared(ids)``."""
        enc = self.encoder
        pos = torch.arange(ids.shape[1], device=ids.device)
        bias = enc.position_bias(pos, pos) + self.pad_bias(mask)
        h = enc.drop(self.shared(ids) if emb is None else emb)
        for blk in enc.layers:
            x = blk.attn_norm(h)
            h = h + blk.drop(blk.attn(x, x, bias))
            h = h + blk.drop(blk.ff(blk.ff_norm(h)))
        return enc.drop(enc.norm(h))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return (h * self.d_model ** -0.5) @ self.shared.weight.T

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, dec_ids: torch.Tensor,
                emb: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) of decoder inputs ``dec_ids`` given encoder ``ids`` (or ``emb``)."""
        return self.logits(self.hidden(ids, mask, dec_ids, emb))

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor, dec_ids: torch.Tensor,
               emb: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's final states (B, T, d) (normed, after dropout): what ``logits`` reads."""
        enc_h = self.encode(ids, mask, emb)
        dec = self.decoder
        T = dec_ids.shape[1]
        pos = torch.arange(T, device=ids.device)
        causal = torch.where(pos[None, :] > pos[:, None], NEG, 0.0)
        self_bias = dec.position_bias(pos, pos) + causal
        cross_bias = self.pad_bias(mask)
        h = dec.drop(self.shared(dec_ids))
        for blk in dec.layers:
            x = blk.attn_norm(h)
            h = h + blk.drop(blk.attn(x, x, self_bias))
            h = h + blk.drop(blk.cross(blk.cross_norm(h), enc_h, cross_bias))
            h = h + blk.drop(blk.ff(blk.ff_norm(h)))
        return dec.drop(dec.norm(h))

    # incremental decoding (eval mode)
    def start(self, ids: torch.Tensor, mask: torch.Tensor, emb: torch.Tensor | None = None) -> dict:
        """Encode once; cross-attention keys/values per layer for the B users (not per beam)."""
        enc_h = self.encode(ids, mask, emb)
        return {"cross": [blk.cross.kv(enc_h) for blk in self.decoder.layers], "cross_bias": self.pad_bias(mask),
                "self": [None] * len(self.decoder.layers), "t": 0}

    def step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B*G, 1): the last token of G hypotheses per user -> logits (B*G, V), updated state."""
        h, state = self.step_hidden(tokens, state)
        return self.logits(h), state

    def step_hidden(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """``step``'s decoder final states (B*G, d) (what ``logits`` reads), updated state."""
        dec = self.decoder
        B = state["cross_bias"].shape[0]
        N = tokens.shape[0]
        G = N // B
        t = state["t"]
        if t == 0 and G > 1 and bool((tokens.view(B, G) == tokens.view(B, G)[:, :1]).all()):
            # the first step feeds every hypothesis the start token: run it once per user, then expand
            h, st = self.step_hidden(tokens[::G], state)
            return h.repeat_interleave(G, 0), {
                **st, "self": [(k.repeat_interleave(G, 0), v.repeat_interleave(G, 0)) for k, v in st["self"]]}
        pos = torch.arange(t + 1, device=tokens.device)
        self_bias = dec.position_bias(pos[-1:], pos)  # (1, h, 1, t+1): keys are past tokens only
        h = self.shared(tokens)  # (N, 1, d)
        new_self = []
        for blk, past, (ck, cv) in zip(dec.layers, state["self"], state["cross"]):
            x = blk.attn_norm(h)
            k, v = blk.attn.kv(x)
            if past is not None:
                k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
            new_self.append((k, v))
            h = h + blk.attn.attend(x, k, v, self_bias)
            # cross-attention: a user's G hypotheses are G queries against that user's encoder states
            x = blk.cross_norm(h).reshape(B, G, -1)
            h = h + blk.cross.attend(x, ck, cv, state["cross_bias"]).reshape(N, 1, -1)
            h = h + blk.ff(blk.ff_norm(h))
        return dec.norm(h)[:, -1], {**state, "self": new_self, "t": t + 1}

    @staticmethod
    def reorder(state: dict, index: torch.Tensor) -> dict:
        """Keep hypotheses ``index`` (rows of B*G, parents stay within their user)."""
        return {**state, "self": [(k[index], v[index]) for k, v in state["self"]]}


# --- Hugging Face T5 <-> lean parameter names (old runs, the equivalence test, the old-step benchmark) ---
_HF_RULES = [
    (r"^(encoder|decoder)\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.", r"\1.rel."),
    (r"^(encoder|decoder)\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"\1.layers.\2.attn."),
    (r"^(encoder|decoder)\.block\.(\d+)\.layer\.0\.layer_norm\.", r"\1.layers.\2.attn_norm."),
    (r"^decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.", r"decoder.layers.\1.cross."),
    (r"^decoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"decoder.layers.\1.cross_norm."),
    (r"^(encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)\.DenseReluDense\.", None),
    (r"^(encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)\.layer_norm\.", None),
    (r"^(encoder|decoder)\.final_layer_norm\.", r"\1.norm."),
    (r"^(encoder\.embed_tokens|decoder\.embed_tokens|lm_head)\.", "shared."),
]


def hf_key(key: str) -> str:
    """HF T5 parameter name -> lean name (tied embedding copies all map to ``shared.weight``)."""
    for pat, rep in _HF_RULES:
        m = re.match(pat, key)
        if not m:
            continue
        if rep is None:  # feed-forward block: layer index from whichever stack matched
            stack, idx = ("encoder", m.group(2)) if m.group(2) is not None else ("decoder", m.group(3))
            part = "ff." if "DenseReluDense" in pat else "ff_norm."
            return f"{stack}.layers.{idx}.{part}" + key[m.end():]
        return re.sub(pat, rep, key)
    return key


def hf_to_lean(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert an HF T5 state dict (without prefix) to this module's names."""
    return {hf_key(k): v for k, v in state.items()}
