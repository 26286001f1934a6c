"""Items added after training (cold start): IDs from their text, a grown token table and trie.

Used by serving (``Recommender.add_items``) and by the cold-start protocol (``eval/coldstart.py``, its models
built in ``train/coldstart.py``): the run's own text encoder (RUN/embeddings) and tokenizer (RUN/tokens) give
each new text base codes (``encode``) and a unique ID (``new_ids``: the collision suffix continues); the caller commits the results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sidrec.decoding.trie import Trie, build_trie
from sidrec.embeddings.text import embed_new_texts
from sidrec.errors import SidrecError
from sidrec.tokenizers.base import APPENDED
from sidrec.utils.artifacts import read_json


def new_item_ids(run: Path | None, tokenizer, texts: list[str], vocab_sizes: list[int], names: list[str],
                 emb: np.ndarray | None = None):
    """(base codes, unique IDs) of new items; one clear error when the run cannot give them IDs. ``emb``:
    their text embeddings when the caller has them already (else embedded here)."""
    if run is None or not (Path(run) / "embeddings" / "embeddings.json").is_file():
        raise SidrecError(f"{run}: this run does not keep its text encoder (trained before sidrec 0.3, or "
                          f"its tokens were not made from text); new items cannot get IDs")
    if emb is None:
        emb = embed_new_texts(Path(run) / "embeddings", list(texts))
    base = tokenizer.encode(emb)  # published IDs: one line
    sids = tokenizer.new_ids(base)
    limit = np.asarray(vocab_sizes)
    over = np.flatnonzero((sids >= limit[None, :]).any(1))
    if len(over):
        i = int(over[0])
        raise SidrecError(f"new item {names[i]!r}: its code prefix already holds {int(sids[i, -1])} items, the "
                          f"most this run's ID vocabulary can tell apart ({int(limit[-1])}); retrain (more "
                          f"spare_suffixes)")
    return base, sids


def grown(model, tokenizer, base: np.ndarray, sids: np.ndarray, level_sizes: list[int],
          device) -> tuple[np.ndarray, Trie, torch.Tensor]:
    """All IDs, the trie and the model's token table with the new items appended (nothing committed)."""
    all_sids = np.vstack([tokenizer.sids_, sids])
    return all_sids, build_trie(all_sids, level_sizes).to(device), model.vocab.item_tokens(all_sids).to(device)


def collision_suffix(run: Path | None) -> bool:
    """Whether the run's IDs end with an appended collision position (left out of prefix scores)."""
    p = Path(run) / "tokens" / "tokenizer.json" if run else None
    meta = read_json(p) if p and p.is_file() else {}
    return meta.get("config", {}).get("collision", "append") in APPENDED and \
        meta.get("id_length", 0) == meta.get("levels", 0) + 1


def unit_rows(vecs) -> torch.Tensor:
    """Rows scaled to unit length (zero rows, e.g. padding, stay zero), float32."""
    v = torch.as_tensor(np.asarray(vecs, dtype=np.float32))
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def semantic_knn(hist, emb, new_emb) -> torch.Tensor:
    """TIGER's semantic-KNN baseline for new items: (users, new items) indices of ``new_emb``'s rows, best first
    (ties by position), ranked by the cosine of their text embedding to the mean text embedding of the history.
    ``hist``: (users, L) rows of ``emb``, 0 = padding (row 0 is never read as an item)."""
    h = torch.as_tensor(np.asarray(hist), dtype=torch.long)
    e = torch.as_tensor(np.asarray(emb, dtype=np.float32))
    mask = (h > 0).unsqueeze(-1)
    mean = (e[h] * mask).sum(1) / mask.sum(1).clamp_min(1)
    return torch.argsort(unit_rows(mean) @ unit_rows(new_emb).T, dim=1, descending=True, stable=True)


def reserved_lists(order: torch.Tensor, new: torch.Tensor, k: int, epsilon: float) -> torch.Tensor:
    """Top-``k`` lists of new items alone, as a text baseline is served under TIGER's epsilon: the first
    ``max(1, int(epsilon * k))`` (at most all) new items of each row of ``order``, then -1 (no item)."""
    cap = min(len(new), max(1, int(epsilon * k)))
    lists = torch.full((len(order), k), -1, dtype=torch.long)
    lists[:, :cap] = torch.as_tensor(new).cpu()[order[:, :cap].cpu()]
    return lists


@torch.no_grad()
def neighbour_scores(items: torch.Tensor, scores: torch.Tensor, vecs: torch.Tensor, new_vecs: torch.Tensor, *,
                     tau: float = 0.1, hist: torch.Tensor | None = None, history_weight: float = 0.0,
                     chunk: int = 4096) -> torch.Tensor:
    """New items scored through the generator's decoded items (B, beam) and their log-probabilities: each decoded
    item passes its probability to the new items near it in the text-embedding space,
    ``log sum_b P(b) exp((cos(new, b) - 1) / tau)`` (B, n_new). A new item identical in text to a decoded item gets
    that item's log-probability; ``tau`` is the kernel's width in cosine (0: only exact twins). This generalises
    TIGER's retrieval of new items that share a generated ID's prefix (a near-twin shares it) to new items whose
    codes were never generated, and keeps the scores on the decoded items' log-probability scale, so new items
    can compete for slots. ``vecs``: unit rows of the seen catalog (row = item index), ``new_vecs``: the new
    items' unit rows. ``hist`` (B, L) with ``history_weight`` w > 0: the history's items pass a share w of the
    beam's total probability too (equal parts; 0 = padding), the rest goes through the decoded items."""
    if tau <= 0:
        raise SidrecError(f"neighbour tau {tau}: must be > 0")
    s = scores.float().masked_fill(items < 0, float("-inf"))
    anchors = items.clamp_min(0)
    if hist is not None and history_weight > 0:
        if not history_weight < 1:
            raise SidrecError(f"history weight {history_weight}: must lie in [0, 1)")
        total = torch.logsumexp(s, 1, keepdim=True)
        n = (hist > 0).sum(1, keepdim=True).clamp_min(1)
        hs = (total + torch.log(history_weight / n)).expand(-1, hist.shape[1]).masked_fill(hist <= 0, float("-inf"))
        s = torch.cat([s + float(np.log1p(-history_weight)), hs], 1)
        anchors = torch.cat([anchors, hist.clamp_min(0)], 1)
    v = vecs[anchors]  # (B, anchors, d)
    out = []
    for c in range(0, len(new_vecs), chunk):
        cos = torch.einsum("bkd,nd->bkn", v, new_vecs[c:c + chunk])
        out.append(torch.logsumexp(s[:, :, None] + (cos - 1.0) / tau, dim=1))
    return torch.cat(out, 1) if out else s.new_zeros(len(items), 0)
