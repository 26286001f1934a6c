"""Generator runs on *different* semantic IDs (tokenizations) decoded as one, at the item level.

The per-level ensemble (``decoding/ensemble.py``) needs one trie: members that share the IDs. Runs whose IDs
differ (RQ-VAE and LETTER tokens of the same catalog, say) agree only on the items. Each member decodes its own
top ``beam`` items with its own trie; the union of those lists is the candidate set; every member then scores
every candidate exactly (log P(item's ID tokens | history) under that member, teacher-forced through the decode
hooks, no trie: ``decoding.beam.candidate_scores``), and the candidates are ranked by the weighted sum of the
members' log-probabilities: a product of experts over the union of their beams. Members share the dataset (item indices), not the IDs.
"""

from __future__ import annotations

import torch

from sidrec.decoding.beam import candidate_scores, generate, trim_history


def union_candidates(lists: list[torch.Tensor]) -> torch.Tensor:
    """Per row, the distinct items of several (B, k_m) lists (-1 = none): (B, sum k_m), each item once, -1 in the
    holes (order: ascending item index; the ranking comes from the scores)."""
    cat = torch.cat(lists, 1)
    s = cat.sort(1).values
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    return s.masked_fill(dup | (s < 1), -1)


@torch.no_grad()
def fused_generate(models: list, tries: list, weights: list[float], users: torch.Tensor, hists: list[torch.Tensor],
                   *, beam: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items (B, k) (-1 where fewer exist) and their fused scores (sum over members of weight x
    log-probability), from the union of the members' own top-``beam`` lists. ``hists``: each member's
    histories (B, H_m) (members may read histories of different lengths)."""
    lists = [generate(m, users, trim_history(h), t, beam=beam, k=beam)[0] for m, t, h in zip(models, tries, hists)]
    cand = union_candidates(lists)
    score = torch.zeros(cand.shape, device=cand.device)
    for m, w, h in zip(models, weights, hists):
        score += w * candidate_scores(m, users, h, cand)
    score = score.masked_fill(cand < 1, float("-inf"))
    if cand.shape[1] < k:  # fewer candidates than slots (a tiny catalog): the rest stay empty
        pad = k - cand.shape[1]
        cand = torch.cat([cand, cand.new_full((len(cand), pad), -1)], 1)
        score = torch.cat([score, score.new_full((len(score), pad), float("-inf"))], 1)
    top, idx = score.topk(k, dim=1)
    items = cand.gather(1, idx)
    return torch.where(torch.isinf(top), torch.full_like(items, -1), items), top
