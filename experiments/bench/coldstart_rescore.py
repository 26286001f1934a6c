"""Score a finished cold-start run's new items again, without its model: every rule built on the
generator's decoded items (neighbours, blend at any history weight) and both text baselines, from the beams
that ``sidrec evaluate-coldstart`` saved in OUT/coldstart_beams.npz and the whole catalog's text embeddings.

  python experiments/bench/coldstart_rescore.py OUT/coldstart_beams.npz --embeddings EMB [--taus 0.05 0.1 0.2]
         [--weights 0 0.25 0.5 0.75 1] [--epsilons 0.1 0.2 0.3 0.5] [--json rows.jsonl --dataset NAME --seed S]

EMB: a `sidrec embed` directory (or .npy) of the whole dataset the run held items out of (rows = that dataset's
item indices), e.g. the `--embeddings` the run was given. Weight w: the share of probability the history's items
pass (0 = "neighbours", 0.5 = "blend", 1 = the kernel KNN, no generator); reserved slots, as in the table of
experiments/RESULTS.md. Rows: {"dataset", "seed", "epsilon", "rule": "blend" | "history", "weight", "tau", "recall@10",
"ndcg@10", "users"} ("history": the semantic KNN on the mean history embedding)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from sidrec.decoding.beam import merge_new_items
from sidrec.decoding.newitems import neighbour_scores, reserved_lists, semantic_knn, unit_rows
from sidrec.embeddings.text import load_embeddings
from sidrec.eval.metrics import metrics_from_ranks, ranks_from_lists


def rescore(beams: dict, full: np.ndarray, *, taus, weights, epsilons, k: int = 10) -> list[dict]:
    rows_of = beams["dataset_row"]  # served index -> row of ``full``
    vecs = unit_rows(full[rows_of])
    vecs[0] = 0
    items, scores = torch.as_tensor(beams["items"]), torch.as_tensor(beams["scores"])
    hist, new = torch.as_tensor(beams["hist"]), torch.as_tensor(beams["new"])
    target, out = beams["target"], []

    def row(eps, rule, w, tau, lists):
        m = metrics_from_ranks(ranks_from_lists(lists, target), (k,))
        out.append({"epsilon": eps, "rule": rule, "weight": w, "tau": tau, f"recall@{k}": m[f"recall@{k}"],
                    f"ndcg@{k}": m[f"ndcg@{k}"], "users": int(len(target))})

    # the semantic KNN as evaluate-coldstart computes it (the same function)
    knn = semantic_knn(hist, full[rows_of], full[rows_of][new.numpy()])
    for eps in epsilons:
        row(eps, "history", None, None, reserved_lists(knn, new, k, eps).numpy())
    for tau in taus:
        for w in weights:
            if w >= 1:  # the history's items alone (the kernel KNN), at the top of the list like the KNN
                ns = neighbour_scores(torch.where(hist > 0, hist, -1), torch.zeros(hist.shape), vecs, vecs[new], tau=tau)
            else:
                ns = neighbour_scores(items, scores, vecs, vecs[new], tau=tau, hist=hist, history_weight=w)
            for eps in epsilons:
                if w >= 1:
                    lists = reserved_lists(torch.argsort(ns, dim=1, descending=True, stable=True), new, k, eps)
                else:
                    lists = merge_new_items(items[:, :k], scores[:, :k], new, ns, epsilon=eps, slots="reserve")[0]
                row(eps, "blend", w, tau, lists.numpy())
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("beams", type=Path)
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.1])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dataset", default="")
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    b = dict(np.load(a.beams))
    full = load_embeddings(a.embeddings)
    rows = rescore(b, full, taus=a.taus, weights=a.weights, epsilons=a.epsilons)
    for r in rows:
        print(f"eps {r['epsilon']:<4} {r['rule']:8s} w {r['weight']!s:5s} tau {r['tau']!s:5s} "
              f"R@10 {r['recall@10']:.4f} N@10 {r['ndcg@10']:.4f}")
    if a.json:
        with a.json.open("a") as f:
            for r in rows:
                f.write(json.dumps({"dataset": a.dataset, "seed": a.seed, **r, "command": " ".join(sys.argv)}) + "\n")
