import numpy as np
import torch

from sidrec.eval.metrics import metrics_from_ranks, ranks_from_lists, target_ranks


def test_hand_computed_ranks():
    # ranks 0, 1, 4, miss -> recall@1 = 1/4, recall@5 = 3/4
    m = metrics_from_ranks(np.array([0, 1, 4, -1]), ks=(1, 5))
    assert m["recall@1"] == 0.25 and m["recall@5"] == 0.75
    assert np.isclose(m["ndcg@5"], (1 + 1 / np.log2(3) + 1 / np.log2(6)) / 4)
    assert np.isclose(m["mrr@5"], (1 + 1 / 2 + 1 / 5) / 4)
    assert np.isclose(m["ndcg@1"], 0.25)


def test_target_ranks_ties_and_padding():
    scores = torch.tensor([[-torch.inf, 0.5, 0.9, 0.5, 0.1], [-torch.inf, 1.0, 1.0, 1.0, 0.0]])
    # user 0 target 3: item 2 ahead, item 1 ties but lower index -> rank 2
    # user 1 target 1: ties with lower index only -> rank 0
    assert target_ranks(scores, torch.tensor([3, 1])).tolist() == [2, 0]
    scores[0, 3] = -torch.inf  # a masked target ranks last
    assert target_ranks(scores, torch.tensor([3, 1]))[0].item() == 5


def test_matches_naive_reference_on_random_data():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 50, generator=g)
    targets = torch.randint(1, 50, (200,), generator=g)
    ranks = target_ranks(scores, targets)
    naive = []
    for s, t in zip(scores.tolist(), targets.tolist()):
        order = sorted(range(50), key=lambda j: (-s[j], j))
        naive.append(order.index(t))
    assert ranks.tolist() == naive
    m = metrics_from_ranks(ranks, ks=(10,))
    hits = [r < 10 for r in naive]
    assert np.isclose(m["recall@10"], np.mean(hits))
    assert np.isclose(m["ndcg@10"], np.mean([1 / np.log2(r + 2) if r < 10 else 0 for r in naive]))


def test_ranks_from_lists():
    ranked = np.array([[3, 1, 2], [5, 6, -1], [7, 8, 9]])
    assert ranks_from_lists(ranked, np.array([2, 5, 1])).tolist() == [2, 0, -1]
