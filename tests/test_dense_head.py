"""TIGER's dense head (LIGER / COBRA): the fused re-ranking equals brute force over the catalog, it learns a planted
pattern on its own, the run reloads to the same lists, and items added by text are scored like their twins."""

import json

import numpy as np
import pytest
import torch

from sidrec.decoding.beam import candidate_scores, generate
from sidrec.decoding.trie import build_trie
from sidrec.errors import SidrecError
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from test_tiger import catalog, planted_run

DENSE = TIGERConfig(preset="custom", n_layers=2, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0, max_history=5,
                    dense_weight=1.0, dense_fusion=0.7, dense_temperature=0.1)


def _model(seed=0, n=40):
    torch.manual_seed(seed)
    codes = catalog(n=n, seed=seed)
    text = np.random.default_rng(seed).normal(size=(n + 1, 12)).astype(np.float32)
    return TIGER(DENSE, Vocab([4, 4, 4]), codes, text).eval(), codes


def test_rerank_equals_brute_force_fused_scores():
    model, codes = _model()
    trie = build_trie(codes, [4, 4, 4])
    hist = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 11]])
    users = torch.zeros(3, dtype=torch.long)
    items, scores = generate(model, users, hist, trie, beam=len(codes), k=5)  # the beam holds every item
    every = torch.arange(1, len(codes) + 1)[None].expand(3, -1)
    fused = candidate_scores(model, users, hist, every) + 0.7 * model.dense_log_probs(users, hist)[:, 1:]
    best = fused.topk(5, dim=1)
    assert torch.equal(items, best.indices + 1)
    torch.testing.assert_close(scores, best.values, rtol=1e-4, atol=1e-4)
    # dense_fusion 0: the beam's own order
    plain = TIGER(TIGERConfig(**{**DENSE.__dict__, "dense_fusion": 0.0}), Vocab([4, 4, 4]), codes,
                  model.dense_text.float().numpy())
    plain.load_state_dict(model.state_dict())
    it, _ = generate(plain.eval(), users, hist, trie, beam=len(codes), k=5)
    assert torch.equal(it, candidate_scores(model, users, hist, every).topk(5, dim=1).indices + 1)


def test_items_added_by_text_score_like_their_twins():
    model, codes = _model()
    hist = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5]])
    users = torch.zeros(2, dtype=torch.long)
    model.add_item_texts(model.dense_text[[3, 17]].float().numpy())  # items 41, 42: twins of 3 and 17
    lp = model.dense_log_probs(users, hist)
    assert lp.shape == (2, len(codes) + 3)
    torch.testing.assert_close(lp[:, 41], lp[:, 3])
    torch.testing.assert_close(lp[:, 42], lp[:, 17])
    assert torch.isinf(lp[:, 0]).all()


def test_dense_head_needs_text_vectors(tmp_path):
    with pytest.raises(SidrecError, match="one text vector per item"):
        TIGER(DENSE, Vocab([4, 4, 4]), catalog(n=40), np.zeros((12, 8), np.float32))
    with pytest.raises(SidrecError, match="dense_weight"):
        TIGERConfig(dense_weight=-1.0)


def test_dense_head_learns_a_planted_pattern_and_reloads(tmp_path):
    """Item i is always followed by item i + 1: the dense head alone must find the next item, the fused run
    must rank it first, and the run must reload (its text vectors in the weights file) to the same lists."""
    from sidrec.train.loop import TrainConfig
    from sidrec.train.tiger import decode_users, load_tiger, train_tiger

    ds, emb = planted_run(tmp_path, dim=32)
    (tmp_path / "emb").mkdir()
    np.save(tmp_path / "emb" / "item_emb.npy", np.vstack([np.zeros((1, 32), np.float32), emb]))
    cfg = TIGERConfig(preset="custom", n_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=128, dropout=0.0,
                      max_history=3, dense_weight=1.0, dense_temperature=0.1, dense_embeddings=str(tmp_path / "emb"))
    m = train_tiger(ds, tmp_path / "tok", tmp_path / "run", cfg,
                    TrainConfig(epochs=12, batch_size=64, learning_rate=3e-3, eval_every=4, seed=0),
                    beam=20, ks=(1, 5, 10), log=lambda s: None)
    assert m["test"]["recall@1"] > 0.9, m["test"]
    model, trie, conf = load_tiger(tmp_path / "run")
    assert conf["model"]["dense_weight"] == 1.0
    top = np.load(tmp_path / "run" / "test_top.npy")
    again = decode_users(model, trie, ds, "test", beam=20, k=top.shape[1], batch_size=64, device=torch.device("cpu"))
    assert np.array_equal(again, top)
    # the dense head on its own: the next item is its argmax for nearly every test user
    users, hist, target = ds.eval_inputs("test", 3)
    dense_top = model.dense_log_probs(torch.as_tensor(users), torch.as_tensor(hist)).argmax(1).numpy()
    assert (dense_top == target).mean() > 0.9


def test_coldstart_dense_rule_through_the_cli(cli, syn_dir, tmp_path):
    """`evaluate-coldstart --set dense_weight=1 --rule dense`: held-out items scored by the run's own dense head
    (its text vectors grow with the new items); a run without a head refuses the rule in one line."""
    out = tmp_path / "cold"
    args = [syn_dir, "--out", out, "--holdout", "0.2", "--epsilon", "0.1", "--epsilon", "0.5", "--encoder", "tfidf",
            "--method", "rqkmeans", "--preset", "small", "--epochs", "2", "--device", "cpu", "--codebook-size", "8",
            "--levels", "2", "--rule", "dense", "--rule", "prefix"]
    code, so, se = cli("evaluate-coldstart", *args, "--set", "dense_weight=1.0")
    assert code == 0, se
    rows = json.loads((out / "coldstart.json").read_text())["rows"]
    dense = {(r["epsilon"], r["slots"]): r["recall@10"] for r in rows if r["rule"] == "dense"}
    assert sorted(dense) == [(e, s) for e in (0.1, 0.5) for s in ("compete", "reserve")]
    assert all(dense[(e, "reserve")] >= dense[(e, "compete")] for e in (0.1, 0.5))
    assert json.loads((out / "run" / "config.json").read_text())["model"]["dense_weight"] == 1.0
    code, so, se = cli("evaluate-coldstart", *[a if a != out else tmp_path / "plain" for a in args])
    assert code == 2 and "no dense head" in se and len(se.strip().splitlines()) == 1
