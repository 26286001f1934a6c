import json

import numpy as np
import pytest

from sidrec.eval.evaluate import EvalConfig, evaluate_lists, evaluate_scorer


def _write_preds(path, ds, split, rank_of_target):
    """Predictions where user u's target sits at position rank_of_target[u] (or absent if < 0)."""
    _, _, targets = ds.eval_inputs(split, 1)
    ids = ds.items["item_id"].to_numpy()
    others = [i for i in range(1, ds.n_items + 1)]
    with open(path, "w") as f:
        for row, (uid, t) in enumerate(zip(ds.users["user_id"], targets)):
            lst = [i for i in others if i != t][:20]
            r = rank_of_target[row]
            if r >= 0:
                lst.insert(r, t)
            f.write(json.dumps({"user": uid, "items": [ids[i - 1] for i in lst]}) + "\n")


def test_cli_evaluate_scores_predictions_exactly(syn_ds, syn_dir, tmp_path, cli):
    rng = np.random.default_rng(0)
    ranks = rng.integers(-1, 15, size=syn_ds.n_users)
    p = tmp_path / "preds.jsonl"
    _write_preds(p, syn_ds, "test", ranks)
    code, out, err = cli("evaluate", "--data", syn_dir, "--predictions", p, "--k", "5,10", "--out", tmp_path / "m.json")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["users"] == syn_ds.n_users and m["split"] == "test"
    assert np.isclose(m["recall@5"], np.mean((ranks >= 0) & (ranks < 5)))
    exp = np.where((ranks >= 0) & (ranks < 10), 1 / np.log2(ranks.clip(0) + 2), 0).mean()
    assert np.isclose(m["ndcg@10"], exp)
    assert m["protocol"]["exclude_history"] is False


def test_missing_users_count_as_misses(syn_ds, syn_dir, tmp_path, cli):
    p = tmp_path / "preds.jsonl"
    _write_preds(p, syn_ds, "test", np.zeros(syn_ds.n_users, dtype=int))
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    code, out, err = cli("evaluate", "--data", syn_dir, "--predictions", p, "--out", tmp_path / "m.json")
    m = json.loads((tmp_path / "m.json").read_text())
    assert np.isclose(m["recall@5"], (len(lines) // 2) / syn_ds.n_users)
    assert m["protocol"]["users_without_predictions"] == syn_ds.n_users - len(lines) // 2


def test_exclude_history_masks_history_items(syn_ds):
    # a "model" that ranks the last history item first and the target second
    users, hist, targets = syn_ds.eval_inputs("test", 20)
    ranked = np.stack([hist[:, -1], targets], 1)
    same = hist[:, -1] == targets
    base = evaluate_lists(ranked, syn_ds, "test", EvalConfig(ks=(1,)))
    masked = evaluate_lists(ranked, syn_ds, "test", EvalConfig(ks=(1,), exclude_history=True))
    assert np.isclose(base["recall@1"], same.mean())
    # with masking the history item disappears; the target moves up unless it is itself in the history
    assert masked["recall@1"] > base["recall@1"]
    assert masked["protocol"]["exclude_history"] is True


def test_scorer_and_lists_agree(syn_ds):
    import torch

    g = torch.Generator().manual_seed(1)
    table = torch.randn(syn_ds.n_users + 1, syn_ds.n_items + 1, generator=g)
    a = evaluate_scorer(lambda u, h: table[u].clone(), syn_ds, "valid", EvalConfig(ks=(5, 10), batch_size=64))
    t = table.clone()
    t[:, 0] = -torch.inf
    ranked = torch.topk(t[1:], 10).indices.numpy()
    b = evaluate_lists(ranked, syn_ds, "valid", EvalConfig(ks=(5, 10)))
    for k in ("recall@5", "ndcg@10"):
        assert a[k] == pytest.approx(b[k])
