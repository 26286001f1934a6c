"""TIGER (Rajput et al., NeurIPS 2023): a T5 encoder-decoder, trained from scratch, that reads a user's
history as semantic-ID tokens and generates the next item's ID; with LETTER's ranking-guided loss
(cross-entropy on logits / tau). The backbone is sidrec's lean T5 (``models.encdec``): HF T5's math on
``scaled_dot_product_attention``, compiled for training; runs trained on HF T5 load unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sidrec.errors import SidrecError
from sidrec.models.encdec import EncoderDecoder, hf_key, hf_to_lean
from sidrec.utils.artifacts import load_safetensors

PAD, EOS, N_SPECIAL = 0, 1, 2  # PAD doubles as the decoder start token (T5 convention)


PRESETS = {
    "tiger": dict(n_layers=4, d_model=128, n_heads=6, d_kv=64, d_ff=1024, dropout=0.1, attn_dropout=0.0),
    "strong": dict(n_layers=6, d_model=128, n_heads=6, d_kv=64, d_ff=1024, dropout=0.2, attn_dropout=0.0),
    "small": dict(n_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=256, dropout=0.1, attn_dropout=0.0),  # CPU demo
}
PRESETS["custom"] = PRESETS["tiger"]  # "custom": no preset of its own; unset fields take the tiger values
PRESETS["letter"] = PRESETS["tiger"]  # LETTER-TIGER: TIGER's shape, LETTER's training recipe (train/tiger.py)


@dataclass(frozen=True, kw_only=True)
class TIGERConfig:
    """Generator shape. Precedence: a field given explicitly (not None) > the preset's value.
    ``TIGERConfig(preset="strong", d_model=256)`` is the strong preset with d_model 256."""

    preset: Literal["tiger", "letter", "strong", "small", "custom"] = "tiger"
    n_layers: int | None = None  # encoder layers (decoder the same)
    d_model: int | None = None
    n_heads: int | None = None
    d_kv: int | None = None
    d_ff: int | None = None
    dropout: float | None = None
    attn_dropout: float | None = None  # on attention probabilities (T5: = dropout); 0 = fused SDPA kernels
    max_history: int | None = None  # None = the dataset's (stats.json); train_tiger resolves it
    user_tokens: int = 0  # hashed user-id buckets (TIGER: 2000); 0 = off (it hurt in later studies)
    temperature: float = 1.0  # LETTER's ranking-guided loss: CE on logits / tau (1 = plain CE)
    label_smoothing: float = 0.0  # share of each ID token's target spread evenly over the codes of its level
    spare_suffixes: int = 16  # room on the collision level for items added after training (cold start)
    # a dense head (LIGER / COBRA): the decoder's start state predicts the next item's text vector (projected),
    # trained with a softmax over the catalog at dense_temperature; decoded candidates are re-ranked by
    # log P(ID) + dense_fusion * log P_dense(item), and items added later by text are scored by the same head
    dense_weight: float = 0.0  # weight of the dense loss next to the ID loss; 0 = no dense head
    dense_temperature: float = 0.05  # of the cosine softmax over the catalog
    dense_fusion: float = 1.0  # weight of the dense log-probability in the re-ranking score (0 = the beam's order)
    dense_embeddings: str | None = None  # embeddings folder (item_emb.npy); None = the one the tokens were made from
    # item-level pooling of the history (BARGE's idea): each history item's ID-token embeddings are pooled by
    # attention and the pooled vector is gated back into each of its tokens before the encoder
    item_pooling: bool = False

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise SidrecError(f"unknown TIGER preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise SidrecError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.dense_weight < 0 or self.dense_fusion < 0 or self.dense_temperature <= 0:
            raise SidrecError(f"dense head: dense_weight ({self.dense_weight}) and dense_fusion ({self.dense_fusion}) "
                              f"must be >= 0, dense_temperature ({self.dense_temperature}) > 0")
        for k, v in PRESETS[self.preset].items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)


class Vocab:
    """Token layout: [PAD, EOS] + level-0 codes + level-1 codes + ... + user buckets. ``base``: the id of the
    first ID token (an LLM's ID tokens follow its text vocabulary)."""

    def __init__(self, level_sizes: list[int], user_tokens: int = 0, base: int = N_SPECIAL):
        self.level_sizes = list(level_sizes)
        self.offsets = [int(x) for x in np.cumsum([base] + self.level_sizes[:-1])]
        self.user_offset = N_SPECIAL + sum(self.level_sizes)
        self.user_tokens = user_tokens
        self.size = self.user_offset + user_tokens

    def item_tokens(self, codes: np.ndarray) -> torch.Tensor:
        """(n_items, L) codes -> (n_items + 1, L) token table, row 0 = padding."""
        tok = codes + np.asarray(self.offsets)[None, :]
        return torch.as_tensor(np.vstack([np.zeros((1, codes.shape[1]), np.int64), tok]))


class TIGER(nn.Module):
    """A ``Generator`` (models/generator.py): T5 encoder over the history's ID tokens, decoder over the next ID."""

    kind = "tiger"

    def __init__(self, cfg: TIGERConfig, vocab: Vocab, codes: np.ndarray, item_text: np.ndarray | None = None):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        self.net = EncoderDecoder(vocab_size=vocab.size, d_model=cfg.d_model, n_layers=cfg.n_layers,
                                  n_heads=cfg.n_heads, d_kv=cfg.d_kv, d_ff=cfg.d_ff, dropout=cfg.dropout,
                                  attn_dropout=cfg.attn_dropout)
        self.register_buffer("item_tok", vocab.item_tokens(codes), persistent=False)  # (n_items + 1, L)
        if cfg.label_smoothing > 0:  # (L, V): uniform over each level's codes, where the smoothed mass goes
            self.register_buffer("level_dist", level_distribution(vocab), persistent=False)
        if cfg.item_pooling:
            self.pool = ItemPooling(cfg.d_model)
        if cfg.dense_weight > 0:
            if item_text is None or len(item_text) != len(codes) + 1:
                raise SidrecError(f"the dense head needs one text vector per item plus the padding row "
                                  f"({len(codes) + 1} rows), got {None if item_text is None else len(item_text)}")
            # the items' text vectors (row = item index, 0 = padding), kept in the weights file: a run scores its
            # catalog, and items added later, without the embeddings folder it was trained from
            self.register_buffer("dense_text", torch.as_tensor(np.asarray(item_text), dtype=torch.float16))
            self.dense_query = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
            self.dense_item = nn.Linear(self.dense_text.shape[1], cfg.d_model)

    @property
    def reranks(self) -> bool:
        """Whether decoded candidates are re-ranked by the dense head (``rerank``)."""
        return self.cfg.dense_weight > 0 and self.cfg.dense_fusion > 0

    @property
    def id_length(self) -> int:
        return self.item_tok.shape[1]

    def encode_inputs(self, users: torch.Tensor, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hist (B, H) item indices (0 = pad) -> input ids (B, H*L [+1]) and attention mask."""
        ids = self.item_tok[hist].flatten(1)  # (B, H*L)
        if self.cfg.user_tokens:
            u = self.vocab.user_offset + (users % self.cfg.user_tokens)
            ids = torch.cat([u[:, None], ids], 1)
        return ids, ids != PAD

    def _inputs(self, users: torch.Tensor, hist: torch.Tensor):
        """(ids, mask, input embeddings or None): with ``item_pooling`` the encoder reads pooled embeddings."""
        ids, mask = self.encode_inputs(users, hist)
        if not self.cfg.item_pooling:
            return ids, mask, None
        n = hist.shape[1] * self.id_length
        emb = self.pool(self.net.shared(ids[:, -n:]).unflatten(1, (hist.shape[1], self.id_length))).flatten(1, 2)
        if ids.shape[1] > n:  # the user token
            emb = torch.cat([self.net.shared(ids[:, :-n]), emb], 1)
        return ids, mask, emb

    def teacher_forced(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor):
        """Logits (B, L, V) of the target items' ID tokens given the true prefix, and the labels (B, L)."""
        h, labels = self._decoder_states(users, hist, target)
        return self.net.logits(h), labels

    def _decoder_states(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor):
        """The decoder's final states (B, L, d) teacher-forced on the target items' IDs, and the labels (B, L)."""
        ids, mask, emb = self._inputs(users, hist)
        labels = self.item_tok[target]  # (B, L)
        dec_in = torch.cat([torch.full_like(labels[:, :1], PAD), labels[:, :-1]], 1)
        return self.net.hidden(ids, mask, dec_in, emb), labels

    def forward(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Ranking-guided loss of the target items' ID tokens (tau = 1: plain cross-entropy), plus
        ``dense_weight`` x the dense head's cross-entropy of the target item over the catalog."""
        h, labels = self._decoder_states(users, hist, target)
        loss = ranking_guided_loss(self.net.logits(h), labels, self.cfg.temperature, self.cfg.label_smoothing,
                                   getattr(self, "level_dist", None))
        if self.cfg.dense_weight <= 0:
            return loss
        dense = self._dense_logits(h[:, 0], self._dense_items())
        return loss + self.cfg.dense_weight * F.cross_entropy(dense.float(), target)

    # the dense head
    def _dense_items(self) -> torch.Tensor:
        """Unit item vectors (n_items + 1, d) in the head's space (row 0, padding, never scores)."""
        w = self.dense_item.weight
        return F.normalize(self.dense_item(self.dense_text.to(w.dtype)), dim=-1)

    def _dense_logits(self, start: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, n_items + 1) cosine / temperature of the decoder's start states to every item; padding -inf."""
        q = F.normalize(self.dense_query(start), dim=-1)
        with torch.autocast(q.device.type, enabled=False):  # float32 cosines: at 1 / 0.05 a bf16 error counts
            s = (q.float() @ items.float().T) / self.cfg.dense_temperature
        return s.index_fill(1, torch.zeros(1, dtype=torch.long, device=s.device), float("-inf"))

    @torch.no_grad()
    def dense_log_probs(self, users: torch.Tensor, hist: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """log P_dense(item | history) over the whole catalog (B, n_items + 1), items added later included.
        ``state``: these histories' ``decode_start`` state (the encoder is then not run again)."""
        if state is None:
            state = self.decode_start(users, hist)
        start, _ = self.net.step_hidden(torch.full((hist.shape[0], 1), PAD, device=hist.device), state)
        return torch.log_softmax(self._dense_logits(start, self._dense_items()), -1)

    @torch.no_grad()
    def rerank(self, users: torch.Tensor, hist: torch.Tensor, items: torch.Tensor, scores: torch.Tensor,
               k: int, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded candidates (B, beam) re-ranked by log P(ID) + dense_fusion * log P_dense: the top ``k``
        items (-1 stays last) and their fused scores. ``state``: the ``decode_start`` state the beam began from."""
        fused = self.fused_scores(users, hist, items, scores, state).masked_fill(items < 0, float("-inf"))
        top = fused.topk(min(k, fused.shape[1]), dim=1)
        out = items.gather(1, top.indices)
        return out.masked_fill(torch.isinf(top.values), -1), top.values

    @torch.no_grad()
    def fused_scores(self, users: torch.Tensor, hist: torch.Tensor, items: torch.Tensor,
                     id_scores: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """``id_scores`` (log P of the items' IDs, or of an ID prefix for items added later) + dense_fusion x log
        P_dense of ``items`` ((B, C), or (C,) for every history): the score the dense head ranks by."""
        dense = self.dense_log_probs(users, hist, state)
        dense = dense[:, items] if items.dim() == 1 else dense.gather(1, items.clamp_min(0))
        return id_scores.float() + self.cfg.dense_fusion * dense

    def add_item_texts(self, vecs: np.ndarray | torch.Tensor) -> None:
        """Items appended to the catalog (after ``item_tok`` grew): their text vectors join the dense head's."""
        if self.cfg.dense_weight > 0:
            v = torch.as_tensor(np.asarray(vecs), dtype=torch.float16, device=self.dense_text.device)
            self.dense_text = torch.cat([self.dense_text, v])

    # the decoding hooks of the generator contract
    def decode_start(self, users: torch.Tensor, hist: torch.Tensor) -> dict:
        return self.net.start(*self._inputs(users, hist))

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        return self.net.step(tokens, state)

    def decode_reorder(self, state: dict, index: torch.Tensor) -> dict:
        return self.net.reorder(state, index)

    def load_weights(self, path: str) -> None:
        """Load RUN/model.safetensors, written by this backbone or by the HF-T5 one of sidrec <= 0.1."""
        sd = load_safetensors(path, device=str(self.item_tok.device))
        if any(k.startswith("t5.") for k in sd):
            sd = {"net." + k: v for k, v in hf_to_lean({k[3:]: v for k, v in sd.items()}).items()}
        self.load_state_dict(sd)

    def to_hf(self):
        """An HF ``T5ForConditionalGeneration`` with these weights (HF ``generate``, the old-step benchmark)."""
        from transformers import T5Config, T5ForConditionalGeneration

        c = self.cfg
        if c.item_pooling:
            raise SidrecError("a TIGER run with item_pooling has no Hugging Face T5 equivalent")
        t5 = T5ForConditionalGeneration(T5Config(
            vocab_size=self.vocab.size, d_model=c.d_model, d_kv=c.d_kv, d_ff=c.d_ff, num_layers=c.n_layers,
            num_decoder_layers=c.n_layers, num_heads=c.n_heads, dropout_rate=c.dropout, feed_forward_proj="relu",
            pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, tie_word_embeddings=True))
        lean = self.net.state_dict()
        t5.load_state_dict({k: lean[hf_key(k)] for k in t5.state_dict()})
        return t5.to(self.item_tok.device)


class ItemPooling(nn.Module):
    """Item-level pooling of a history's ID tokens (BARGE's idea): per item, attention with a learned query over
    its L token embeddings gives one vector, gated back into each of its tokens:
    ``e' = e + sigmoid(W_g [e; p]) * W_p p``. ``W_p`` starts at zero, so a fresh model reads its tokens unchanged."""

    def __init__(self, d: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(d))
        self.proj = nn.Linear(d, d, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.gate = nn.Linear(2 * d, d)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """e (B, H, L, d) -> (B, H, L, d)."""
        a = torch.softmax((e @ self.query.to(e.dtype)) * e.shape[-1] ** -0.5, dim=-1)  # (B, H, L)
        p = (a.unsqueeze(-1) * e).sum(2, keepdim=True).expand_as(e)
        return e + torch.sigmoid(self.gate(torch.cat([e, p], -1))) * self.proj(p)


def level_distribution(vocab: Vocab) -> torch.Tensor:
    """(L, V): row t uniform over the token ids of level t's codes (the targets label smoothing spreads over)."""
    d = torch.zeros(len(vocab.level_sizes), vocab.size)
    for t, (off, n) in enumerate(zip(vocab.offsets, vocab.level_sizes)):  # L rows: a handful of levels
        d[t, off:off + n] = 1.0 / n
    return d


def ranking_guided_loss(logits: torch.Tensor, labels: torch.Tensor, tau: float = 1.0, smoothing: float = 0.0,
                        level_dist: torch.Tensor | None = None) -> torch.Tensor:
    """LETTER eq.: -sum_t log softmax(logits_t / tau)[y_t], averaged over tokens. With ``smoothing`` e and
    ``level_dist`` (L, V): (1 - e) * that + e * the cross-entropy against the uniform distribution over the codes
    of each token's level (label smoothing kept inside the level, where the trie lets decoding go)."""
    if not smoothing:
        return F.cross_entropy((logits / tau).flatten(0, 1).float(), labels.flatten())
    lp = torch.log_softmax((logits / tau).float(), -1)  # (B, L, V)
    nll = -lp.gather(-1, labels[..., None])[..., 0]
    uniform = -(lp * level_dist[: labels.shape[1]]).sum(-1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()
