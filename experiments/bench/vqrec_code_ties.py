"""does VQ-Rec lose N@10 to SASRec because items with equal codes tie?

  python experiments/bench/vqrec_code_ties.py RUN [--json rows.jsonl]

Items whose D codes are all equal get the same vector, hence the same score for every user: a test target in
such a group shares its score with its code twins, and the full ranking breaks the tie by catalog order.
This measures, on the test split of a fine-tuned VQ-Rec run (its own dataset):
- the share of items and of test targets in a code-collision group;
- R@10 / N@10 as ranked (ties broken pessimistically: every twin ranked above the target, as a strict
  ``score > target score`` count puts them level; ``optimistic`` puts the target first among its twins);
- ``popularity``: twins ordered by their number of training interactions (a tie-break that needs no training);
- the same split by targets that do / do not collide.
The gap between pessimistic and optimistic ranks is what resolving collisions (a per-item code, a suffix)
could give at most.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from sidrec.data.dataset import load_dataset
from sidrec.eval.metrics import metrics_from_ranks
from sidrec.train.vqrec import load_vqrec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    model, meta = load_vqrec(a.run, "cpu")
    model.eval()
    ds = load_dataset(meta["domains"][0]["dataset"])
    codes = model.codes.cpu().numpy()[1:]
    _, group, size = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    collides = np.concatenate([[False], size[group.ravel()] > 1])  # by item index (row 0 = padding)
    _, hist, target = ds.eval_inputs("test", model.cfg.max_history)
    # training popularity (the sequences before the validation and test items): a tie-break that needs no training
    tr = ds.seq[np.concatenate([np.arange(a, b - 2) for a, b in zip(ds.offsets[:-1], ds.offsets[1:])])]
    pop = torch.as_tensor(np.bincount(tr, minlength=ds.n_items + 1))
    worst, best, bypop = [], [], []
    with torch.no_grad():
        for s in range(0, len(hist), a.batch):
            sc = model.score(torch.as_tensor(hist[s:s + a.batch])).float()
            sc[:, 0] = -torch.inf
            t = torch.as_tensor(target[s:s + a.batch])
            ts = sc.gather(1, t[:, None])
            above = (sc > ts).sum(1)
            level = (sc == ts).sum(1) - 1  # the target's twins (and exact float ties)
            best.append(above.numpy())
            worst.append((above + level).numpy())
            # twins ranked by training popularity (more interactions first; equal counts: pessimistic)
            tp = pop[t][:, None]
            bypop.append((above + ((sc == ts) & (pop[None] >= tp)).sum(1) - 1).numpy())
    worst, best, bypop = np.concatenate(worst), np.concatenate(best), np.concatenate(bypop)
    col = collides[target]
    rows = []
    for name, mask in (("all", np.ones_like(col)), ("target collides", col), ("target unique", ~col)):
        for how, r in (("pessimistic", worst), ("popularity", bypop), ("optimistic", best)):
            m = metrics_from_ranks(r[mask], (10,))
            rows.append({"run": str(a.run), "targets": name, "ties": how, "users": int(mask.sum()),
                         "recall@10": round(m["recall@10"], 5), "ndcg@10": round(m["ndcg@10"], 5)})
    share = {"items_in_collision_groups": round(float(collides[1:].mean()), 4),
             "test_targets_in_collision_groups": round(float(col.mean()), 4)}
    print(json.dumps(share))
    for r in rows:
        print(json.dumps(r))
    if a.json:
        with open(a.json, "a") as f:
            f.writelines(json.dumps({**share, **r, "command": "python experiments/bench/vqrec_code_ties.py " + " ".join(sys.argv[1:])})
                         + "\n" for r in rows)


if __name__ == "__main__":
    main()
