"""Several generator runs decoded as one: the ensemble's beam search is exact over the members' averaged
per-level log-probabilities, and `sidrec ensemble` scores two seeds of a run on the test split."""

import json

import numpy as np
import pytest
import torch

from sidrec.decoding.beam import generate
from sidrec.decoding.ensemble import Ensemble
from sidrec.decoding.trie import Trie
from sidrec.errors import SidrecError
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab

TINY = TIGERConfig(preset="custom", n_layers=1, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0, max_history=5)


def test_ensemble_beam_search_equals_brute_force_product_of_experts():
    """beam >= catalog: the top-k are the items with the highest sum over levels of log_softmax(w1 lp1 + w2 lp2),
    lp the members' teacher-forced log-probabilities; one member alone = that member's own search."""
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    codes = codes[rng.permutation(50)]
    sizes = [4, 4, 4]
    torch.manual_seed(0)
    a, b = TIGER(TINY, Vocab(sizes), codes).eval(), TIGER(TINY, Vocab(sizes), codes).eval()
    trie = Trie(codes, sizes)
    hist, users = torch.randint(1, 51, (4, 5)), torch.arange(4)
    ens = Ensemble([a, b], [1.0, 3.0])
    assert ens.weights == [0.25, 0.75]
    with torch.no_grad():
        items, scores = generate(ens, users, hist, trie, beam=50, k=10)
        for u in range(4):
            la, _ = a.teacher_forced(users[u:u + 1].expand(50), hist[u:u + 1].expand(50, -1), torch.arange(1, 51))
            lb, _ = b.teacher_forced(users[u:u + 1].expand(50), hist[u:u + 1].expand(50, -1), torch.arange(1, 51))
            mix = torch.log_softmax(0.25 * torch.log_softmax(la, -1) + 0.75 * torch.log_softmax(lb, -1), -1)
            off = a.vocab.offsets
            lp = torch.stack([mix[:, j, off[j]:off[j] + 4].gather(1, torch.as_tensor(codes[:, j])[:, None])[:, 0]
                              for j in range(3)], 1).sum(1)
            top = torch.topk(lp, 10)
            assert items[u].tolist() == (top.indices + 1).tolist()
            assert torch.allclose(scores[u], top.values, atol=1e-4)
        alone, s_alone = generate(Ensemble([a]), users, hist, trie, beam=20, k=10)
        own, s_own = generate(a, users, hist, trie, beam=20, k=10)
    assert torch.equal(alone, own) and torch.allclose(s_alone, s_own, atol=1e-5)
    assert not torch.equal(items, own)  # the second member changes the lists
    other = TIGER(TINY, Vocab(sizes), codes[::-1].copy())
    with pytest.raises(SidrecError, match="semantic IDs differ"):
        Ensemble([a, other])


@pytest.mark.slow
def test_cli_ensembles_two_seeds(tmp_path, cli):
    """Two seeds of a TIGER run on the planted pattern: `sidrec ensemble` writes metrics.json (with the members'
    own test metrics) and valid top lists; the ensemble learns the pattern as its members do; runs on other
    IDs are refused in one line."""
    from conftest import pattern_dataset

    from sidrec.data.dataset import load_dataset
    from sidrec.train.loop import TrainConfig
    from sidrec.train.tiger import train_tiger

    pattern_dataset(tmp_path, n_users=300, n_items=40, lengths=(6, 10))
    ds = load_dataset(tmp_path / "ds")
    cfg = TIGERConfig(preset="custom", n_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=128, dropout=0.0, max_history=3)
    for seed in (0, 1):
        train_tiger(ds, tmp_path / "tok", tmp_path / f"run{seed}", cfg,
                    TrainConfig(epochs=8, batch_size=64, learning_rate=3e-3, eval_every=4, seed=seed),
                    beam=20, ks=(5, 10), log=lambda s: None)
    code, out, err = cli("ensemble", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "ens"),
                         "--device", "cpu", "--k", "5,10")
    assert code == 0, err
    m = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    members = [x["test"]["recall@5"] for x in m["members"]]
    assert len(members) == 2 and m["test"]["recall@5"] >= min(members) - 0.05 and m["test"]["recall@5"] > 0.8, (m["test"], members)
    top = np.load(tmp_path / "ens" / "test_top.npy")
    assert top.shape == (300, 10) and ((top >= 1) & (top <= 40)).all()
    (tmp_path / "run1" / "config.json").write_text(json.dumps(
        {**json.loads((tmp_path / "run1" / "config.json").read_text()), "tokens_codes_sha256": "0" * 64}))
    code, out, err = cli("ensemble", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "e2"))
    assert code == 2 and "other semantic IDs" in err and "Traceback" not in err
