"""Several generator runs decoded as one: the ensemble's beam search is exact over the members' averaged
per-level log-probabilities; runs on different IDs fuse at the item level, exactly over the union of their beams;
`sidrec ensemble` scores two seeds of a run, or runs on two tokenizations, on the test split."""

import json

import numpy as np
import pytest
import torch

from sidrec.decoding.beam import candidate_scores, generate
from sidrec.decoding.ensemble import Ensemble
from sidrec.decoding.fusion import fused_generate, union_candidates
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


def _item_logprobs(model, users, hist, n):
    """(B, n) log P(item | history) of every item, teacher-forced (the brute force)."""
    rows = []
    for u in range(len(users)):
        logits, labels = model.teacher_forced(users[u:u + 1].expand(n), hist[u:u + 1].expand(n, -1),
                                              torch.arange(1, n + 1))
        rows.append(torch.log_softmax(logits, -1).gather(2, labels[..., None])[..., 0].sum(1))
    return torch.stack(rows)


def test_item_fusion_of_runs_on_different_ids_equals_brute_force():
    """Two members on different codes of the same 50 items: every candidate's score is its teacher-forced
    log-probability under each member; the fused top-k are the union of the members' own beams ranked by the
    weighted sum (beam >= catalog: the whole catalog, ranked exactly); empty slots are -1."""
    rng = np.random.default_rng(0)
    codes_a = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    codes_b = np.unique(rng.integers(0, 8, (600, 2)), axis=0)[:50]
    codes_a, codes_b = codes_a[rng.permutation(50)], codes_b[rng.permutation(50)]
    torch.manual_seed(0)
    a = TIGER(TINY, Vocab([4, 4, 4]), codes_a).eval()
    b = TIGER(TINY, Vocab([8, 8]), codes_b).eval()
    ta, tb = Trie(codes_a, [4, 4, 4]), Trie(codes_b, [8, 8])
    hist, users = torch.randint(1, 51, (4, 5)), torch.arange(4)
    hist[0, :3] = 0
    with torch.no_grad():
        la, lb = _item_logprobs(a, users, hist, 50), _item_logprobs(b, users, hist, 50)
        cand = torch.tensor([[3, 7, -1, 50], [1, -1, -1, -1], [2, 4, 6, 8], [50, 49, 48, 47]])
        got = candidate_scores(a, users, hist, cand)
        want = torch.where(cand > 0, la.gather(1, (cand - 1).clamp(min=0)), torch.tensor(float("-inf")))
        assert torch.allclose(got, want, atol=1e-5)
        items, scores = fused_generate([a, b], [ta, tb], [0.25, 0.75], users, [hist, hist], beam=50, k=10)
        fused = 0.25 * la + 0.75 * lb
        top = fused.topk(10, dim=1)
        assert torch.equal(items, top.indices + 1) and torch.allclose(scores, top.values, atol=1e-4)
        items, scores = fused_generate([a, b], [ta, tb], [0.5, 0.5], users, [hist, hist], beam=4, k=6)
        own = [generate(m, users, hist, t, beam=4, k=4)[0] for m, t in ((a, ta), (b, tb))]
        for u in range(4):
            pool = sorted(set(own[0][u].tolist()) | set(own[1][u].tolist()))
            exact = sorted(pool, key=lambda i: -float(0.5 * la[u, i - 1] + 0.5 * lb[u, i - 1]))[:6]
            assert items[u, :len(exact)].tolist() == exact and (items[u, len(exact):] == -1).all()
    u = union_candidates([torch.tensor([[3, 1, -1]]), torch.tensor([[1, 2, 3]])])
    assert sorted(x for x in u[0].tolist() if x > 0) == [1, 2, 3] and (u == -1).sum() == 3


def _two_runs_ensembled(tmp_path, cli, toks: tuple[str, str]):
    """Two TIGER runs (seeds 0, 1) on the planted pattern, on tokens TMP/toks[0] and TMP/toks[1], then
    `sidrec ensemble` of them into TMP/ens: returns its metrics.json, the members' recall@5 and the top lists."""
    from sidrec.data.dataset import load_dataset
    from sidrec.train.loop import TrainConfig
    from sidrec.train.tiger import train_tiger

    ds = load_dataset(tmp_path / "ds")
    cfg = TIGERConfig(preset="custom", n_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=128, dropout=0.0, max_history=3)
    for seed, tok in enumerate(toks):
        train_tiger(ds, tmp_path / tok, tmp_path / f"run{seed}", cfg,
                    TrainConfig(epochs=8, batch_size=64, learning_rate=3e-3, eval_every=4, seed=seed),
                    beam=20, ks=(5, 10), log=lambda s: None)
    code, out, err = cli("ensemble", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "ens"),
                         "--device", "cpu", "--k", "5,10")
    assert code == 0, err
    m = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    return m, [x["test"]["recall@5"] for x in m["members"]], np.load(tmp_path / "ens" / "test_top.npy")


@pytest.mark.slow
def test_cli_ensembles_two_seeds(tmp_path, cli):
    """Two seeds of a TIGER run on the planted pattern: `sidrec ensemble` writes metrics.json (with the members'
    own test metrics) and valid top lists; the ensemble learns the pattern as its members do; an unknown --fuse
    is refused in one line."""
    from conftest import pattern_dataset

    pattern_dataset(tmp_path, n_users=300, n_items=40, lengths=(6, 10))
    m, members, top = _two_runs_ensembled(tmp_path, cli, ("tok", "tok"))
    assert len(members) == 2 and m["test"]["recall@5"] >= min(members) - 0.05 and m["test"]["recall@5"] > 0.8, (m["test"], members)
    assert top.shape == (300, 10) and ((top >= 1) & (top <= 40)).all()
    assert m["fuse"] == "levels"
    code, out, err = cli("ensemble", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "e2"),
                         "--fuse", "bogus")
    assert code == 2 and "--fuse 'bogus'" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_fuses_runs_on_two_tokenizations_at_the_item_level(tmp_path, cli):
    """Runs on two different tokenizations of the planted pattern: `sidrec ensemble` fuses them by items (auto),
    learns the pattern as its members do, returns valid lists; --fuse levels refuses them in one line."""
    from conftest import pattern_dataset

    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer

    ds = pattern_dataset(tmp_path, n_users=300, n_items=40, lengths=(6, 10))
    RQKMeansTokenizer(RQKMeansConfig(n_levels=3, codebook_size=4)).fit(
        np.random.default_rng(5).normal(size=(ds.n_items, 8)).astype(np.float32), log=lambda s: None
    ).save(tmp_path / "tok2")
    m, members, top = _two_runs_ensembled(tmp_path, cli, ("tok", "tok2"))
    assert m["fuse"] == "items" and m["test"]["recall@5"] >= min(members) - 0.05 and m["test"]["recall@5"] > 0.8, \
        (m["test"], members)
    assert top.shape == (300, 10) and ((top >= 1) & (top <= 40)).all()
    code, out, err = cli("ensemble", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "e2"),
                         "--fuse", "levels")
    assert code == 2 and "other semantic IDs" in err and "--fuse items" in err and "Traceback" not in err
