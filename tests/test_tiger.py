"""TIGER: beam search equals brute force, only valid distinct items, planted pattern learned, loss checks."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sidrec.decoding.beam import generate
from sidrec.decoding.trie import SparseTrie, Trie
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab, ranking_guided_loss

TINY = TIGERConfig(preset="custom", n_layers=2, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0, max_history=5)


def catalog(n=50, sizes=(4, 4, 4), seed=0):
    rng = np.random.default_rng(seed)
    all_ids = np.array(list(itertools.product(*[range(s) for s in sizes])))
    return all_ids[rng.choice(len(all_ids), n, replace=False)]


@pytest.mark.parametrize("kind", [Trie, SparseTrie])
def test_trie_tables(kind):
    codes = np.array([[0, 1], [0, 2], [1, 1]])
    t = kind(codes, [2, 3])
    assert t.allowed_next([]) == [0, 1] and t.allowed_next([0]) == [1, 2] and t.allowed_next([1]) == [1]
    p = t.next(0, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 0]))  # the prefixes (0), (1), (0)
    assert t.next(1, p, torch.tensor([2, 1, 0])).tolist() == [2, 3, -1]  # items (0, 2), (1, 1); (0, 0) is none
    assert t.mask(1, p).tolist() == [[False, True, True], [False, True, False], [False, True, True]]


def test_sparse_trie_equals_dense_trie():
    """Every mask and every transition agree on a random catalog (4 levels, uneven sizes), dead prefixes included."""
    rng = np.random.default_rng(0)
    sizes = [5, 7, 3, 6]
    codes = np.unique(np.stack([rng.integers(0, s, 400) for s in sizes], 1), axis=0)
    codes = codes[rng.permutation(len(codes))]
    dense, sparse = Trie(codes, sizes), SparseTrie(codes, sizes)
    prefix = torch.zeros(1, dtype=torch.long)
    for j, s in enumerate(sizes):
        pd_, ps = torch.cat([prefix, torch.tensor([-1])]), torch.cat([prefix, torch.tensor([-1])])
        assert torch.equal(dense.mask(j, pd_)[:-1], sparse.mask(j, ps)[:-1]) and not sparse.mask(j, ps)[-1].any()
        p = prefix.repeat_interleave(s)
        c = torch.arange(s).repeat(len(prefix))
        a, b = dense.next(j, p, c), sparse.next(j, p, c)
        assert torch.equal(a, b)
        prefix = torch.unique(a[a >= 0])
    assert sorted(prefix.tolist()) == list(range(1, len(codes) + 1))  # every item reached once


@pytest.mark.parametrize("beam,kind", [(50, Trie), (64, Trie), (50, SparseTrie)])
def test_beam_search_equals_brute_force(beam, kind):
    torch.manual_seed(0)
    codes = catalog()
    sizes = [4, 4, 4]
    model = TIGER(TINY, Vocab(sizes), codes).eval()
    trie = kind(codes, sizes)
    hist = torch.randint(1, 51, (6, 5))
    users = torch.arange(6)
    items, scores = generate(model, users, hist, trie, beam=beam, k=10)
    # brute force: full log-probability of every item's ID
    for b in range(6):
        with torch.no_grad():
            logits, _ = model.teacher_forced(users[b:b + 1].expand(50), hist[b:b + 1].expand(50, -1),
                                             torch.arange(1, 51))
        lp = torch.stack([torch.log_softmax(logits[:, j], -1)[:, model.vocab.offsets[j]:model.vocab.offsets[j] + 4]
                          .gather(1, torch.as_tensor(codes[:, j])[:, None]).squeeze(1) for j in range(3)], 1).sum(1)
        top = torch.topk(lp, 10)
        assert items[b].tolist() == (top.indices + 1).tolist()
        assert torch.allclose(scores[b], top.values, atol=1e-4)


def test_only_valid_distinct_items_even_with_narrow_beam():
    torch.manual_seed(1)
    codes = catalog(n=30, seed=3)
    model = TIGER(TINY, Vocab([4, 4, 4]), codes).eval()
    items, scores = generate(model, torch.arange(16), torch.randint(1, 31, (16, 5)), Trie(codes, [4, 4, 4]),
                                   beam=20, k=20)
    for row in items.tolist():
        valid = [i for i in row if i > 0]
        assert len(valid) == len(set(valid)) == 20 and all(1 <= i <= 30 for i in valid)
    # fewer items than the beam: the rest is -1, never an invalid ID
    items, _ = generate(model, torch.arange(2), torch.randint(1, 31, (2, 5)), Trie(codes, [4, 4, 4]),
                              beam=40, k=40)
    assert (items[:, 30:] == -1).all() and set(items[0, :30].tolist()) == set(range(1, 31))


def test_ranking_guided_loss():
    logits = torch.randn(3, 4, 11)
    labels = torch.randint(0, 11, (3, 4))
    assert torch.allclose(ranking_guided_loss(logits, labels, 1.0), F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1)))
    assert torch.allclose(ranking_guided_loss(logits, labels, 0.5), F.cross_entropy(logits.reshape(-1, 11) * 2, labels.reshape(-1)))


def test_label_smoothing_stays_inside_the_level():
    """Hand-worked: vocab [PAD, EOS] + level 0 (2 codes, ids 2-3) + level 1 (3 codes, ids 4-6)."""
    from sidrec.errors import SidrecError
    from sidrec.models.tiger import level_distribution

    v = Vocab([2, 3])
    d = level_distribution(v)
    assert torch.allclose(d, torch.tensor([[0, 0, .5, .5, 0, 0, 0], [0, 0, 0, 0, 1 / 3, 1 / 3, 1 / 3]]))
    logits = torch.zeros(1, 2, 7)
    logits[0, 0, 2] = 2.0  # level 0: the target (id 2) is the favourite
    labels = torch.tensor([[2, 5]])
    lp = torch.log_softmax(logits, -1)[0]
    nll = (-lp[0, 2] - lp[1, 5]) / 2
    uni = (-(lp[0, 2] + lp[0, 3]) / 2 - (lp[1, 4] + lp[1, 5] + lp[1, 6]) / 3) / 2
    got = ranking_guided_loss(logits, labels, 1.0, 0.1, d)
    assert torch.allclose(got, 0.9 * nll + 0.1 * uni) and got > ranking_guided_loss(logits, labels, 1.0)
    assert torch.allclose(ranking_guided_loss(logits, labels, 1.0, 0.0, d), ranking_guided_loss(logits, labels))
    # the model applies it from its config; an old run's config (no key) trains without it
    codes = np.array([[0, 0], [1, 2], [0, 1]])
    m = TIGER(TIGERConfig(preset="small", label_smoothing=0.2), Vocab([2, 3]), codes)
    assert m.level_dist.shape == (2, Vocab([2, 3]).size) and not hasattr(TIGER(TIGERConfig(preset="small"),
                                                                            Vocab([2, 3]), codes), "level_dist")
    with pytest.raises(SidrecError, match="label_smoothing"):
        TIGERConfig(label_smoothing=1.0)


@pytest.mark.slow
def planted_run(tmp_path, dim: int = 16):
    """A dataset where item i is always followed by item i+1 (mod 40), at tmp_path/ds, and RQ-KMeans tokens of
    random ``dim``-d item vectors at tmp_path/tok; returns (dataset, the vectors (n_items, dim))."""
    import pandas as pd

    from sidrec.data.dataset import load_dataset
    from sidrec.data.prepare import PrepareConfig, prepare
    from sidrec.data.schema import RawData
    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer

    n_items, rng = 40, np.random.default_rng(0)
    rows = []
    for u in range(300):
        start, length = rng.integers(n_items), rng.integers(6, 10)
        rows += [(f"u{u}", f"i{(start + k) % n_items}", float(k)) for k in range(length)]
    prepare(RawData(pd.DataFrame(rows, columns=["user", "item", "time"])), tmp_path / "ds", PrepareConfig(min_count=1))
    ds = load_dataset(tmp_path / "ds")
    emb = rng.normal(size=(ds.n_items, dim)).astype(np.float32)
    tok = RQKMeansTokenizer(RQKMeansConfig(n_levels=2, codebook_size=8)).fit(emb, log=lambda s: None)
    tok.save(tmp_path / "tok")
    return ds, emb


def test_learns_planted_sequence_pattern(tmp_path):
    """Item i is always followed by item i+1 (mod n): the generator must find it."""
    from sidrec.train.loop import TrainConfig
    from sidrec.train.tiger import train_tiger

    ds, _ = planted_run(tmp_path)
    m = train_tiger(ds, tmp_path / "tok", tmp_path / "run",
                    TIGERConfig(preset="custom", n_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=128, dropout=0.0,
                               max_history=3),
                    TrainConfig(epochs=12, batch_size=64, learning_rate=3e-3, eval_every=4, seed=0),
                    beam=20, ks=(1, 5, 10, 20), log=lambda s: None)
    assert m["test"]["recall@1"] > 0.9, m["test"]


def _hf_pair(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    codes = catalog(n=40, seed=seed)
    cfg = TIGERConfig(preset="custom", n_layers=2, d_model=32, n_heads=3, d_kv=8, d_ff=48, dropout=dropout,
                      max_history=6)
    model = TIGER(cfg, Vocab([4, 4, 4]), codes).eval()
    with torch.no_grad():  # non-trivial norms, so a wrong norm placement would show
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model, model.to_hf().eval()


def test_lean_backbone_equals_hf_t5():
    """Same weights, same logits as HF T5ForConditionalGeneration (padding, relative bias, tied scaled head)."""
    model, hf = _hf_pair()
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(1, 41, (8, 6), generator=g)
    hist[:3, :2] = 0  # padded histories
    users, target = torch.arange(8), torch.randint(1, 41, (8,), generator=g)
    ids, mask = model.encode_inputs(users, hist)
    with torch.no_grad():
        ours, labels = model.teacher_forced(users, hist, target)
        dec = torch.cat([torch.zeros(8, 1, dtype=torch.long), labels[:, :-1]], 1)
        ref = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    rel = (ours - ref).norm() / ref.norm()
    assert rel < 1e-5, rel
    # incremental decoding (cache + per-user cross-attention) gives the teacher-forced logits too
    with torch.no_grad():
        state = model.net.start(ids, mask)
        for j in range(3):
            step, state = model.net.step(dec[:, j:j + 1], state)
            assert torch.allclose(step, ours[:, j], atol=1e-5)


def test_old_hf_runs_load_into_lean_backbone(tmp_path):
    from safetensors.torch import save_model

    model, hf = _hf_pair(seed=2)

    class Old(torch.nn.Module):  # the layout of sidrec <= 0.1 runs: TIGER.t5 = HF T5
        def __init__(self):
            super().__init__()
            self.t5 = hf

    save_model(Old(), str(tmp_path / "model.safetensors"))
    fresh = TIGER(model.cfg, model.vocab, catalog(n=40, seed=2))
    fresh.load_weights(str(tmp_path / "model.safetensors"))
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n


def test_run_is_self_contained_after_tokens_and_dataset_move(tmp_path, cli):
    """A trained TIGER run keeps its codes and catalog: recommend works with the tokens and dataset gone."""
    import shutil

    import pandas as pd

    from sidrec.data.dataset import load_dataset
    from sidrec.data.prepare import PrepareConfig, prepare
    from sidrec.data.schema import RawData
    from sidrec.serving.recommender import Recommender
    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer
    from sidrec.train.loop import TrainConfig
    from sidrec.train.tiger import train_tiger

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{(s + k) % 20}", float(k)) for u, s in enumerate(rng.integers(0, 20, 80)) for k in range(6)]
    prepare(RawData(pd.DataFrame(rows, columns=["user", "item", "time"])), tmp_path / "ds", PrepareConfig(min_count=1))
    ds = load_dataset(tmp_path / "ds")
    tok = RQKMeansTokenizer(RQKMeansConfig(n_levels=2, codebook_size=4)).fit(
        rng.normal(size=(ds.n_items, 8)).astype(np.float32), log=lambda s: None)
    tok.save(tmp_path / "tok")
    train_tiger(ds, tmp_path / "tok", tmp_path / "run", TINY, TrainConfig(epochs=1, batch_size=64), beam=10,
                ks=(5, 10), log=lambda s: None)
    before = Recommender.load(tmp_path / "run").recommend(["i3", "i4"], k=5)
    shutil.rmtree(tmp_path / "tok")
    shutil.move(tmp_path / "ds", tmp_path / "elsewhere")
    after = Recommender.load(tmp_path / "run").recommend(["i3", "i4"], k=5)
    assert after == before and len(after) == 5
    code, out, err = cli("recommend", tmp_path / "run", "--history", "i3", "--k", "3")
    assert code == 0, err
    code, out, err = cli("recommend", tmp_path / "run", "--history", "nope")
    assert code == 2 and "unknown item" in err


def test_generator_contract_and_registry(tmp_path):
    """TIGER implements the generator contract; a run of another kind is one clear error, not a TIGER fallback."""
    import json

    from sidrec.errors import SidrecError
    from sidrec.models.generator import Generator
    from sidrec.train.generator import GENERATORS
    from sidrec.serving.recommender import load_generator, load_recommender

    model = TIGER(TINY, Vocab([4, 4, 4]), catalog())
    assert isinstance(model, Generator) and model.kind in GENERATORS
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"kind": "sasrec"}))
    with pytest.raises(SidrecError, match="is a sasrec run, not a generator run"):
        load_generator(tmp_path / "run")
    with pytest.raises(SidrecError, match="not a generator run"):
        load_recommender(tmp_path / "run")
