"""Tokenizer reports: code usage per level (used, entropy, perplexity), collisions, reconstruction,
LETTER's CF-overlap ("similarity experiment") and ranking check, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from sidrec.tokenizers.collisions import group_ids


def usage(codes: np.ndarray, sizes: list[int]) -> list[dict]:
    out = []
    for lvl in range(codes.shape[1]):
        cnt = np.bincount(codes[:, lvl], minlength=sizes[lvl])
        p = cnt[cnt > 0] / cnt.sum()
        ent = float(-(p * np.log(p)).sum())
        out.append({"used": int((cnt > 0).sum()), "of": int(sizes[lvl]), "entropy": round(ent, 4),
                    "perplexity": round(float(np.exp(ent)), 2), "max_share": round(float(cnt.max() / cnt.sum()), 4)})
    return out


def nearest_by_cosine(emb: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index of each row's most cosine-similar other row (chunked, on torch)."""
    x = torch.as_tensor(emb, dtype=torch.float32)
    x = x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    out = []
    for s in range(0, len(x), chunk):
        sim = x[s:s + chunk] @ x.T  # (c, n)
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -torch.inf
        out.append(sim.argmax(1))
    return torch.cat(out).numpy()


def cf_overlap(codes: np.ndarray, cf: np.ndarray) -> float:
    """LETTER's similarity check: for each item its nearest item by CF cosine; mean share of agreeing code positions."""
    nn_idx = nearest_by_cosine(cf)
    return float((codes == codes[nn_idx]).mean())


def healthy_floor(codebook_size: int, n_items: int) -> int:
    """Fewest codes a healthy level uses: a quarter of those it could use (min(codebook size, catalog size))."""
    return max(2, min(codebook_size, n_items) // 4)


def degenerate_warnings(codes: np.ndarray, sizes: list[int], collisions: dict,
                        per_level: list[dict] | None = None) -> list[str]:
    """Loud warnings for a degenerate codebook: a level that uses fewer codes than ``healthy_floor``, or base
    IDs so crowded that the collision token does a level's work (a group of at least codebook_size / 4
    items, or over half of all items colliding). ``per_level``: ``usage(codes, sizes)`` if already computed."""
    out = []
    for lvl, u in enumerate(per_level or usage(codes, sizes)):
        if u["used"] < healthy_floor(u["of"], len(codes)):
            out.append(f"degenerate codebook: level {lvl + 1} uses {u['used']} of {u['of']} codes")
    big = collisions["largest_group"]
    if big >= max(2, sizes[-1] // 4) or collisions["rate"] > 0.5:
        out.append(f"degenerate IDs: {collisions['rate']:.0%} of items share their base ID with another (largest "
                   f"group {big} items), so the collision token does the work of a level")
    return out


def _r(x, digits: int = 6):
    """A report figure rounded to ``digits`` significant digits (None stays None)."""
    return None if x is None else float(f"{float(x):.{digits}g}")


def build_report(tok, *, cf: np.ndarray | None = None) -> dict:
    base = tok.codes_
    sizes = tok.base_sizes
    per_level = usage(base, sizes)
    rep = {
        "method": tok.method,
        "levels": int(base.shape[1]),
        "codebook_size": int(sizes[0]),
        "id_length": int(tok.sids_.shape[1]),
        "usage_per_level": [u["used"] for u in per_level],
        "usage": per_level,
        "collision_rate_before": _r(tok.collisions_before_["rate"]),
        "collision_rate_after": _r(tok.collisions_after_["rate"]),
        "collisions_before": tok.collisions_before_,
        "collisions_after": tok.collisions_after_,
        "collision_handling": getattr(tok.cfg, "collision", "none"),
        "sinkhorn_rounds": tok.sinkhorn_rounds_,
        "reconstruction_mse": _r(tok.reconstruction_mse_),
        "fit_seconds": round(tok.fit_seconds_, 3),
        "recluster_seconds": round(tok.recluster_seconds_, 3),  # LETTER: constrained k-means
        "reseeded_codes": tok.reseeded_,
        "cf_overlap": _r(cf_overlap(base, cf)) if cf is not None else None,
        "ranking_check": None,
        "epochs_run": tok.epochs_run_,
        "warnings": degenerate_warnings(base, sizes, tok.collisions_before_, per_level) if tok.method != "published" else [],
    }
    if tok.collisions_after_["rate"] > 0:
        inv, counts = group_ids(tok.sids_)
        rep["items_not_unique"] = (np.flatnonzero(counts[inv] > 1) + 1).tolist()[:1000]
    return rep


def plot_report(tok, rep: dict, out: Path) -> list[str]:
    matplotlib.use("Agg")

    files = []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    cnt = np.sort(np.bincount(tok.codes_[:, 0], minlength=rep["codebook_size"]))[::-1]
    ax.bar(np.arange(len(cnt)), cnt, width=1.0)
    ax.set_xlabel("level-1 code (sorted by frequency)")
    ax.set_ylabel("items")
    ax.set_title(f"{rep['method']}: level-1 code use ({rep['usage_per_level'][0]}/{rep['codebook_size']} used)")
    fig.tight_layout()
    fig.savefig(out / "level1_frequency.png", dpi=110)
    plt.close(fig)
    files.append("level1_frequency.png")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(np.arange(rep["levels"]), [u["perplexity"] for u in rep["usage"]], label="perplexity")
    ax.plot(np.arange(rep["levels"]), rep["usage_per_level"], "o-", color="C1", label="codes used")
    ax.set_xlabel("level")
    ax.set_xticks(np.arange(rep["levels"]), [str(i + 1) for i in range(rep["levels"])])  # whole levels, from 1
    ax.set_title("code usage per level")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "usage_per_level.png", dpi=110)
    plt.close(fig)
    files.append("usage_per_level.png")
    hist = list(tok.history_)
    if hist:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ep = [h["epoch"] for h in hist]
        for key in ("loss", "recon", "quant", "cf", "collision_rate"):
            if all(key in h for h in hist):
                ax.plot(ep, [h[key] for h in hist], label=key)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("epoch")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "training_curve.png", dpi=110)
        plt.close(fig)
        files.append("training_curve.png")
    return files


def write_report(tok, out: Path, **kw) -> dict:
    rep = build_report(tok, **kw)
    rep["plots"] = plot_report(tok, rep, out)
    rep["history"] = list(tok.history_)
    (out / "report.json").write_text(json.dumps(rep, indent=2))
    return rep
