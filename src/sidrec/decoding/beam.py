"""Batched, trie-constrained beam search over fixed-length semantic IDs, as tensor operations.

All users of a batch decode at once with an incremental decoder cache; at each level the logits of
that level's code range are masked by the trie, beams are expanded and pruned with one ``topk``.
Returns the top-K distinct valid items per user (best first) with their log-probabilities.

With ``sample_temperature`` T > 0 the same driver samples instead: stochastic beam search (Kool, van Hoof &
Welling, ICML 2019) perturbs every prefix's log-probability at temperature T with a Gumbel variable
conditioned on its parent's, so the top-K of one pass are K distinct items drawn without replacement from
the model's constrained distribution at T (seeded). Higher T flattens the distribution: more diverse lists.
"""

from __future__ import annotations

import torch

from sidrec.decoding.trie import Trie


@torch.no_grad()
def beam_search(step_fn, init_state, *, batch: int, trie: Trie, offsets: list[int], beam: int, k: int,
                reorder_fn, sample_temperature: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generic driver.

    step_fn(tokens (B*beam, 1), state) -> (logits (B*beam, V), state); reorder_fn(state, index) -> state.
    Returns items (B, k) (item indices, -1 when fewer than k valid items exist) and scores (B, k): the
    log-probabilities (at ``sample_temperature`` when sampling, in sampling order).
    """
    dev = trie.device
    sample = sample_temperature > 0
    scores = torch.full((batch, beam), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live beam per user at the start: no duplicate expansions
    keys = scores.clone()  # sampling: the perturbed log-probabilities (Gumbel keys) of the live prefixes
    prefix = torch.zeros(batch * beam, dtype=torch.long, device=dev)
    tokens = torch.zeros(batch * beam, 1, dtype=torch.long, device=dev)  # decoder start (PAD)
    state = init_state
    L = trie.n_levels
    base = (torch.arange(batch, device=dev) * beam)[:, None]
    for j in range(L):
        logits, state = step_fn(tokens, state)
        size = trie.level_sizes[j]
        logits = logits.float() / sample_temperature if sample else logits.float()
        lvl = torch.log_softmax(logits, -1)[:, offsets[j]:offsets[j] + size]  # (B*beam, size)
        lvl = lvl.masked_fill(~trie.mask(j, prefix), float("-inf"))
        cand = (scores.reshape(-1, 1) + lvl).reshape(batch, beam * size)
        if sample:
            g = _child_keys(cand.reshape(batch * beam, size), keys.reshape(-1, 1), generator)
            keys, flat = g.reshape(batch, beam * size).topk(beam, dim=1)
            scores = cand.gather(1, flat)
        else:
            scores, flat = cand.topk(beam, dim=1)  # (B, beam)
        parent, code = flat // size, flat % size
        gidx = (base + parent).reshape(-1)
        prefix = trie.next(j, prefix[gidx], code.reshape(-1))
        tokens = (code + offsets[j]).reshape(-1, 1)
        if j < L - 1:
            state = reorder_fn(state, gidx)
    items = prefix.reshape(batch, beam)
    items = torch.where(torch.isinf(scores) | (items < 0), torch.full_like(items, -1), items)
    return items[:, :k], scores[:, :k]


def _child_keys(phi: torch.Tensor, parent: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gumbel keys of the children (log-probabilities ``phi`` (N, C)) conditioned on their maximum being the
    parent's key (N, 1): the numerically stable form of Kool et al.'s Appendix B."""
    u = torch.rand(phi.shape, device=phi.device, generator=generator).clamp_(1e-20, 1 - 1e-7)
    g = phi - torch.log(-torch.log(u))  # Gumbel(phi)
    z = g.max(-1, keepdim=True).values
    a = (g - z).clamp(max=0)  # log1mexp(a) = log(1 - exp(a)), a <= 0
    log1mexp = torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))
    v = parent - g + log1mexp
    out = parent - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))
    dead = torch.isinf(phi) | torch.isinf(z) | torch.isinf(parent)
    return out.masked_fill(dead, float("-inf"))


def trim_history(hist: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding left columns of a batch of left-padded histories (exact for TIGER under T5's
    relative positions, and for LC-Rec, whose positions count real tokens only)."""
    return hist[:, hist.shape[1] - max(1, int((hist > 0).sum(1).max())):]


def generate(model, users: torch.Tensor, hist: torch.Tensor, trie: Trie, *, beam: int = 20, k: int = 20,
             sample_temperature: float = 0.0, seed: int = 0):
    """Top-k distinct valid items of any generator (models/generator.py): encode once, then one decoder step
    per ID level; returns items (B, k) (-1 where fewer exist) and their log-probabilities. With
    ``sample_temperature`` T > 0: k distinct items sampled without replacement at T (beam = k, seeded).
    A model that ``reranks`` (TIGER with a dense head): its whole beam re-ranked by ``model.rerank``, whose
    fused scores are returned. A model with ``item_log_probs`` (RPG: ID tokens independent given the history)
    ranks every item exactly instead of searching (``beam`` unused; sampling still goes through the trie)."""
    gen = None
    if sample_temperature > 0:
        beam = k
        gen = torch.Generator(device=hist.device).manual_seed(seed)
    elif hasattr(model, "item_log_probs"):  # independent ID tokens (RPG): the whole catalog ranked exactly
        lp = model.item_log_probs(users, hist)
        scores, items = lp.topk(min(k, lp.shape[1]), dim=1)
        items = items.masked_fill(torch.isinf(scores), -1)
        if items.shape[1] < k:
            items = torch.cat([items, items.new_full((items.shape[0], k - items.shape[1]), -1)], 1)
            scores = torch.cat([scores, scores.new_full((scores.shape[0], k - scores.shape[1]), float("-inf"))], 1)
        return items, scores
    elif getattr(model, "reranks", False):  # a generator with a second opinion (a dense head) orders the beam
        state = model.decode_start(users, hist)  # encoded once: the beam and the dense query both start here
        items, scores = beam_search(model.decode_step, state, batch=hist.shape[0], trie=trie,
                                    offsets=model.vocab.offsets, beam=beam, k=beam, reorder_fn=model.decode_reorder)
        return model.rerank(users, hist, items, scores, k, state)
    return beam_search(model.decode_step, model.decode_start(users, hist), batch=hist.shape[0], trie=trie,
                       offsets=model.vocab.offsets, beam=beam, k=k, reorder_fn=model.decode_reorder,
                       sample_temperature=sample_temperature, generator=gen)


@torch.no_grad()
def prefix_scores(model, users: torch.Tensor, hist: torch.Tensor, items: torch.Tensor, levels: int,
                  rows: int = 16384) -> torch.Tensor:
    """log P(the first ``levels`` ID tokens of each of ``items`` | each history): (B, n).

    TIGER's cold start scores a new item by its semantic prefix (the codes without the collision suffix,
    which the model never saw for it): ``candidate_scores`` with the same items for every history."""
    return candidate_scores(model, users, hist, items[None].expand(hist.shape[0], -1), levels=levels, rows=rows)


@torch.no_grad()
def candidate_scores(model, users: torch.Tensor, hist: torch.Tensor, cand: torch.Tensor, levels: int | None = None,
                     rows: int = 16384) -> torch.Tensor:
    """log P(the first ``levels`` (default all) ID tokens of item ``cand[b, c]`` | history b) under ``model`` (any
    generator): (B, C) float, -inf where ``cand`` < 1 (no candidate). Through the decode hooks: each history is
    encoded once, then its C candidates are teacher-forced level by level as C hypotheses (about ``rows`` at a
    time)."""
    B, C = cand.shape
    levels = model.item_tok.shape[1] if levels is None else levels
    if hasattr(model, "item_log_probs"):  # independent ID tokens (RPG): every item's score in one pass
        lp = model.item_log_probs(users, trim_history(hist), levels)
        return lp.gather(1, cand.clamp(min=0)).masked_fill(cand < 1, float("-inf"))
    out = torch.empty(B, C, device=hist.device)
    per = max(1, rows // max(1, C))
    for s in range(0, B, per):
        u, h = users[s:s + per], trim_history(hist[s:s + per])
        t = model.item_tok[cand[s:s + per].clamp(min=0)]  # (b, C, L); item 0 stands in for a missing candidate
        b = len(h)
        state = model.decode_start(u, h)
        tokens = torch.zeros(b * C, 1, dtype=torch.long, device=hist.device)  # decoder start
        total = torch.zeros(b * C, device=hist.device)
        for j in range(levels):
            logits, state = model.decode_step(tokens, state)
            tj = t[:, :, j].reshape(-1)  # user-major: user 0's C candidates, user 1's, ...
            total += torch.log_softmax(logits.float(), -1).gather(1, tj[:, None])[:, 0]
            tokens = tj[:, None]
        out[s:s + b] = total.reshape(b, C)
    return out.masked_fill(cand < 1, float("-inf"))


def merge_new_items(items: torch.Tensor, scores: torch.Tensor, new: torch.Tensor, new_scores: torch.Tensor, *,
                    epsilon: float, slots: str = "compete") -> tuple[torch.Tensor, torch.Tensor]:
    """Up to max(1, floor(epsilon * k)) of the k slots of decoded lists (B, k) go to the ``new`` item indices,
    by their scores ``new_scores`` (B, n_new); they enter where that score beats the decoded items', and new
    items the beam found are replaced by their scored entry. ``slots="reserve"``: the new items always take
    their slots, after the best k - slots decoded items (the list order is then by score within each part;
    compare with a baseline that fills its slots too). Scores computed once serve several epsilons."""
    k = items.shape[1]
    cap = min(len(new), max(1, int(epsilon * k)))
    top = new_scores.topk(cap, dim=1)
    is_new = torch.isin(items, new)
    old_scores = scores.masked_fill(is_new | (items <= 0), float("-inf"))
    all_items = torch.cat([items, new[top.indices]], 1)
    if slots == "reserve":  # drop the decoded tail that the new items displace, whatever the scores
        old_scores = old_scores.clone()
        keep = old_scores.topk(k - cap, dim=1).indices
        mask = torch.ones_like(old_scores, dtype=torch.bool).scatter_(1, keep, False)
        old_scores = old_scores.masked_fill(mask, float("-inf"))
        big = old_scores.masked_fill(torch.isinf(old_scores), 0).abs().amax() + top.values.abs().amax() + 1.0
        new_vals = top.values - 4 * big  # below every kept decoded item, still ordered among themselves
        s, idx = torch.cat([old_scores, new_vals], 1).topk(k, dim=1)
        s = torch.where(idx >= k, torch.cat([old_scores, top.values], 1).gather(1, idx), s)
        return torch.where(torch.isinf(s), torch.full_like(s, -1, dtype=torch.long), all_items.gather(1, idx)), s
    s, idx = torch.cat([old_scores, top.values], 1).topk(k, dim=1)
    return torch.where(torch.isinf(s), torch.full_like(s, -1, dtype=torch.long), all_items.gather(1, idx)), s
