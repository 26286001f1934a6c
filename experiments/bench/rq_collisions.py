"""Collision rate vs fit of an RQ-VAE tokenizer's last level: re-cluster the last level's residuals with
faiss k-means (encoder frozen, warm start from its codebook) and, separately, re-assign colliding items' last code
with LC-Rec's balanced Sinkhorn step; print the collision rate and the last level's distortion of each.
  python experiments/bench/rq_collisions.py TOK EMB       e.g.  python experiments/bench/rq_collisions.py /tmp/tok runs/beauty-minilm
"""
import sys

import faiss
import numpy as np
import torch

from sidrec.embeddings.text import load_embeddings
from sidrec.tokenizers.collisions import collision_stats, sinkhorn_reassign
from sidrec.tokenizers.registry import load_tokenizer

tok = load_tokenizer(sys.argv[1])
m = tok.model_.eval()
x = torch.tensor(load_embeddings(sys.argv[2])[1:])
with torch.no_grad():
    out = m.rq(m.encoder(m.standardize(x)))
codes, res = out.codes.numpy(), out.residuals.numpy()  # (n, L), (n, L, d): each level's input
r = np.ascontiguousarray(res[:, -1]).astype(np.float32)
cb = m.rq.codebooks[-1].detach().numpy().astype(np.float32)


def distortion(c):
    return float(((r - cb_used[c]) ** 2).sum(1).mean())


cb_used = cb
print(f"as fitted: collisions {collision_stats(codes)['rate']:.4f}, last-level distortion {distortion(codes[:, -1]):.4f}")
for it in (5, 20):
    km = faiss.Kmeans(r.shape[1], cb.shape[0], niter=it, seed=0, verbose=False)
    km.train(r, init_centroids=cb)
    a = km.index.search(r, 1)[1][:, 0]
    c2 = codes.copy()
    c2[:, -1] = a
    err = float(((r - km.centroids[a]) ** 2).sum(1).mean())
    print(f"k-means refit of the last level, {it} iterations: collisions {collision_stats(c2)['rate']:.4f}, "
          f"last-level distortion {err:.4f}")
for eps in (0.003, 0.01):
    c3, rounds = sinkhorn_reassign(codes, r, cb, epsilon=eps, rounds=20)
    print(f"Sinkhorn re-assignment (epsilon {eps}): collisions {collision_stats(c3)['rate']:.4f}, last-level distortion "
          f"{distortion(c3[:, -1]):.4f}, last code changed for {float((c3[:, -1] != codes[:, -1]).mean()):.3f} of items")
