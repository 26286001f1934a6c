"""A synthetic catalog whose sequential (collaborative) structure only partly follows item text.

Items sit in a 3-level category tree (department > category > leaf) and get titles built from
their leaf's vocabulary, so text embeddings recover the tree. Users have latent tastes over
departments. Each item also has a fixed "complement" item drawn from a *different* department:
with probability ``p_complement`` the next item is the current item's complement (a collaborative
signal that text cannot explain), with ``p_similar`` an item of the same leaf (text-similar),
otherwise an item of a department the user likes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sidrec.data.schema import RawData

_ADJ = ("classic", "premium", "compact", "deluxe", "organic", "portable", "vintage", "modern", "rugged",
        "silky", "bright", "gentle", "smart", "ultra", "natural", "heavy", "light", "mini", "pro", "soft")
_SYL = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "do", "fa", "gu", "ha", "ji", "pe", "so")


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    n_users: int = 1500
    n_items: int = 600
    n_departments: int = 6
    categories_per_department: int = 4
    leaves_per_category: int = 3
    min_len: int = 6
    max_len: int = 24
    p_complement: float = 0.5  # collaborative transitions (not explained by text)
    p_similar: float = 0.3  # text-similar transitions (same leaf)
    seed: int = 0


def _word(rng: np.random.Generator, k: int = 3) -> str:
    return "".join(rng.choice(_SYL, size=k))


def generate(cfg: SyntheticConfig) -> RawData:
    rng = np.random.default_rng(cfg.seed)
    n_dep, n_cat, n_leaf = cfg.n_departments, cfg.categories_per_department, cfg.leaves_per_category
    n_leaves = n_dep * n_cat * n_leaf
    dep_names = [_word(rng, 2).capitalize() for _ in range(n_dep)]
    cat_names = [_word(rng, 3) for _ in range(n_dep * n_cat)]
    leaf_names = [_word(rng, 3) for _ in range(n_leaves)]
    leaf_vocab = [[_word(rng, 2) for _ in range(4)] for _ in range(n_leaves)]
    brands = [_word(rng, 2).capitalize() + "Co" for _ in range(40)]

    leaf = rng.integers(0, n_leaves, size=cfg.n_items)
    cat, dep = leaf // n_leaf, leaf // (n_leaf * n_cat)
    titles, descs, cats, brand_col = [], [], [], []
    for i in range(cfg.n_items):  # catalog construction, not a hot path
        w = leaf_vocab[leaf[i]]
        titles.append(f"{rng.choice(_ADJ)} {leaf_names[leaf[i]]} {w[rng.integers(4)]} {_word(rng, 2)}")
        descs.append(f"A {rng.choice(_ADJ)} {w[rng.integers(4)]} {w[rng.integers(4)]} for {cat_names[cat[i]]} fans.")
        cats.append(f"{dep_names[dep[i]]}, {cat_names[cat[i]]}, {leaf_names[leaf[i]]}")
        brand_col.append(brands[rng.integers(len(brands))])

    # complement: a fixed item from another department (the collaborative signal)
    shift = rng.integers(1, n_dep, size=cfg.n_items)
    comp_dep = (dep + shift) % n_dep
    by_dep = [np.flatnonzero(dep == d) for d in range(n_dep)]
    complement = np.array([rng.choice(by_dep[d]) if len(by_dep[d]) else i for i, d in enumerate(comp_dep)])
    by_leaf = [np.flatnonzero(leaf == lf) for lf in range(n_leaves)]

    taste = rng.dirichlet(np.full(n_dep, 0.3), size=cfg.n_users)  # (U, n_dep)
    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, size=cfg.n_users)
    seqs = np.zeros((cfg.n_users, cfg.max_len), dtype=np.int64)

    def from_taste(users: np.ndarray) -> np.ndarray:
        cum = taste[users].cumsum(1)
        d = (rng.random((len(users), 1)) > cum).sum(1).clip(max=n_dep - 1)
        return np.array([rng.choice(by_dep[x]) if len(by_dep[x]) else 0 for x in d])

    all_users = np.arange(cfg.n_users)
    seqs[:, 0] = from_taste(all_users)
    for t in range(1, cfg.max_len):  # vectorised over users, one step at a time
        prev = seqs[:, t - 1]
        u = rng.random(cfg.n_users)
        nxt = from_taste(all_users)
        sim = np.array([rng.choice(by_leaf[leaf[p]]) for p in prev])
        nxt = np.where(u < cfg.p_complement + cfg.p_similar, sim, nxt)
        nxt = np.where(u < cfg.p_complement, complement[prev], nxt)
        seqs[:, t] = nxt
    mask = np.arange(cfg.max_len)[None, :] < lengths[:, None]
    users = np.repeat(all_users, cfg.max_len)[mask.ravel()]
    items = seqs.ravel()[mask.ravel()]
    times = np.tile(np.arange(cfg.max_len, dtype=float), cfg.n_users)[mask.ravel()]
    inter = pd.DataFrame({"user": [f"u{x}" for x in users], "item": [f"i{x}" for x in items], "time": times})
    item_df = pd.DataFrame({"item": [f"i{x}" for x in range(cfg.n_items)], "title": titles,
                            "description": descs, "categories": cats, "brand": brand_col,
                            "leaf": leaf, "complement": [f"i{x}" for x in complement]})
    return RawData(inter, item_df, source_files=["synthetic"])
