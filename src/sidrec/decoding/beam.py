"""Batched, trie-constrained beam search over fixed-length semantic IDs, as tensor operations.

All users of a batch decode at once with an incremental decoder cache; at each level the logits of
that level's code range are masked by the trie, beams are expanded and pruned with one ``topk``.
Returns the top-K distinct valid items per user (best first) with their log-probabilities.
"""

from __future__ import annotations

import torch

from sidrec.decoding.trie import Trie


@torch.no_grad()
def beam_search(step_fn, init_state, *, batch: int, trie: Trie, offsets: list[int], beam: int, k: int,
                reorder_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Generic driver.

    step_fn(tokens (B*beam, 1), state) -> (logits (B*beam, V), state); reorder_fn(state, index) -> state.
    Returns items (B, k) (item indices, -1 when fewer than k valid items exist) and scores (B, k).
    """
    dev = trie.allowed[0].device
    scores = torch.full((batch, beam), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live beam per user at the start: no duplicate expansions
    prefix = torch.zeros(batch * beam, dtype=torch.long, device=dev)
    tokens = torch.zeros(batch * beam, 1, dtype=torch.long, device=dev)  # decoder start (PAD)
    state = init_state
    L = len(trie.allowed)
    base = (torch.arange(batch, device=dev) * beam)[:, None]
    for j in range(L):
        logits, state = step_fn(tokens, state)
        size = trie.level_sizes[j]
        lvl = torch.log_softmax(logits.float(), -1)[:, offsets[j]:offsets[j] + size]  # (B*beam, size)
        lvl = lvl.masked_fill(~trie.allowed[j][prefix], float("-inf"))
        cand = (scores.reshape(-1, 1) + lvl).reshape(batch, beam * size)
        scores, flat = cand.topk(beam, dim=1)  # (B, beam)
        parent, code = flat // size, flat % size
        gidx = (base + parent).reshape(-1)
        prefix = trie.child[j][prefix[gidx], code.reshape(-1)]
        tokens = (code + offsets[j]).reshape(-1, 1)
        if j < L - 1:
            state = reorder_fn(state, gidx)
    items = prefix.reshape(batch, beam)
    items = torch.where(torch.isinf(scores) | (items < 0), torch.full_like(items, -1), items)
    return items[:, :k], scores[:, :k]


def generate(model, users: torch.Tensor, hist: torch.Tensor, trie: Trie, *, beam: int = 20, k: int = 20):
    """Top-k distinct valid items of any generator (models/generator.py): encode once, then one decoder step
    per ID level; returns items (B, k) (-1 where fewer exist) and their log-probabilities."""
    return beam_search(model.decode_step, model.decode_start(users, hist), batch=hist.shape[0], trie=trie,
                       offsets=model.vocab.offsets, beam=beam, k=k, reorder_fn=model.decode_reorder)
