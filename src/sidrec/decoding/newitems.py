"""Items added after training (cold start): IDs from their text, a grown token table and trie.

Used by serving (``Recommender.add_items``) and by the cold-start protocol (``train/coldstart.py``): the
run's own text encoder (RUN/embeddings) and tokenizer (RUN/tokens) give each new text base codes
(``encode``) and a unique ID (``new_ids``: the collision suffix continues); the caller commits the results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sidrec.decoding.trie import Trie, build_trie
from sidrec.errors import SidrecError


def new_item_ids(run: Path | None, tokenizer, texts: list[str], vocab_sizes: list[int], names: list[str],
                 emb: np.ndarray | None = None):
    """(base codes, unique IDs) of new items; one clear error when the run cannot give them IDs. ``emb``:
    their text embeddings when the caller has them already (else embedded here)."""
    from sidrec.embeddings.text import embed_new_texts

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
    import json

    from sidrec.tokenizers.base import APPENDED

    p = Path(run) / "tokens" / "tokenizer.json" if run else None
    meta = json.loads(p.read_text()) if p and p.is_file() else {}
    return meta.get("config", {}).get("collision", "append") in APPENDED and \
        meta.get("id_length", 0) == meta.get("levels", 0) + 1
