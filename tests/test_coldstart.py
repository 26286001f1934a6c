"""TIGER's two promises: new items by text without retraining (atomic), and diversity by sampling."""

import json

import numpy as np
import pytest
import torch

from sidrec.errors import SidrecError


@pytest.fixture(scope="module")
def lcrec_run(tiger_run):
    """An LC-Rec run (tiny causal LM) on the same tokens: cold start goes through the generator contract."""
    from sidrec.models.lcrec import LCRecConfig
    from sidrec.train.lcrec import train_lcrec
    from sidrec.train.loop import TrainConfig

    tmp, ds = tiger_run["tmp"], tiger_run["ds"]
    train_lcrec(ds, tmp / "tok", tmp / "lcrec", LCRecConfig(model="tiny-llama", hidden_size=64, num_hidden_layers=2,
                                                            dropout=0.0),
                TrainConfig(epochs=4, batch_size=128, learning_rate=3e-3, select_metric="loss", seed=0),
                beam=10, ks=(5, 10), log=lambda s: None)
    return {**tiger_run, "run": tmp / "lcrec"}


def _text(ds, item_id):
    return str(ds.items.loc[ds.items["item_id"].astype(str) == item_id, "text"].iloc[0])


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["tiger_run", "lcrec_run"])
def test_new_item_gets_a_unique_id_and_is_recommended(generator, request):
    from sidrec.serving.recommender import Recommender

    tiger_run = request.getfixturevalue(generator)
    ds, rec = tiger_run["ds"], Recommender.load(tiger_run["run"])
    hist = ds.items["item_id"].astype(str).tolist()[:3]
    top = rec.recommend(hist, k=1)[0]["item"]
    before = rec.cat
    rec.add_items(["NEW-1"], [_text(ds, top)], ["a new twin of the top item"])  # same text: same code prefix
    assert rec.n_items == ds.n_items + 1 and before.trie is not rec.cat.trie and len(before.ids) == ds.n_items
    sids = rec._tokenizer.sids_
    assert len({tuple(r) for r in sids.tolist()}) == len(sids)  # unique next to the catalog
    new_row, top_row = sids[-1], sids[rec.cat.index[top] - 1]
    assert list(new_row[:-1]) == list(top_row[:-1]) and new_row[-1] != top_row[-1]
    for rule in ("prefix", "neighbours"):
        rows = rec.recommend(hist, k=10, epsilon=0.1, new_rule=rule)
        assert {r["item"] for r in rows if r["new"]} == {"NEW-1"}  # its prefix is predicted: it is in the list
        # prefix: the top item's prefix, scored without the unseen suffix; neighbours: the top item's twin in text
        assert rows[0]["item"] == "NEW-1"
    assert "NEW-1" in {r["item"] for r in rec.recommend(hist, k=10, epsilon=0.1)}  # blend, the default
    assert not any(r["new"] for r in rec.recommend(hist, k=10, epsilon=0.0)[:1])
    every = rec.recommend(hist, k=rec.n_items, beam=rec.n_items)
    assert len({r["item"] for r in every}) == rec.n_items  # decoding returns only valid, distinct items
    assert rec.recommend(["NEW-1"], k=3)  # a new item can be part of a history too


def test_bad_new_items_change_nothing(tiger_run, tmp_path, cli):
    from sidrec.serving.recommender import Recommender

    ds, rec = tiger_run["ds"], Recommender.load(tiger_run["run"])
    first = ds.items["item_id"].astype(str).iloc[0]
    rec.add_items(["N1"], ["something new"])
    cat = rec.cat
    for ids, texts, msg in ((["N1"], ["again"], "already in the catalog"), ([first], ["x"], "already in the catalog"),
                            (["N2", "N2"], ["a", "b"], "repeated"), (["N3"], ["  "], "empty text"),
                            (["N4", "N5"], ["a"], "2 new item ids but 1 texts")):
        with pytest.raises(SidrecError, match=msg):
            rec.add_items(ids, texts)
        assert rec.cat is cat  # all or nothing
    f = tmp_path / "new.csv"
    f.write_text("item_id,text\nX1,fresh thing\nX1,again\n")
    code, _, err = cli("recommend", tiger_run["run"], "--history", first, "--new-items", f)
    assert code == 2 and "already in the catalog or repeated" in err and len(err.strip().splitlines()) == 1
    f.write_text("item_id,text\nX1,fresh thing\n")
    code, out, err = cli("recommend", tiger_run["run"], "--history", first, "--new-items", f, "--k", str(ds.n_items + 1),
                         "--beam", str(ds.n_items + 1))
    assert code == 0 and "X1 (new)" in out, err


def test_published_ids_cannot_take_new_items(tiger_run, tmp_path):
    import shutil

    from sidrec.serving.recommender import Recommender

    run = tmp_path / "run"
    shutil.copytree(tiger_run["run"], run)
    meta = json.loads((run / "tokens" / "tokenizer.json").read_text())
    (run / "tokens" / "tokenizer.json").write_text(json.dumps({**meta, "method": "published", "config": {}}))
    for m in (run / "manifest.json", run / "tokens" / "manifest.json"):  # edited by hand: no manifest to check
        m.unlink(missing_ok=True)
    rec = Recommender.load(run)
    with pytest.raises(SidrecError, match="cannot encode new items"):
        rec.add_items(["P1"], ["text"])
    assert rec.n_items == tiger_run["ds"].n_items


def test_http_items_for_a_generator_run(tiger_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sidrec.serving.app import create_app

    ds = tiger_run["ds"]
    c = TestClient(create_app(tiger_run["run"]))
    first = ds.items["item_id"].astype(str).iloc[0]
    r = c.post("/items", json={"items": [{"item_id": "H1", "text": "brand new thing"}]})
    assert r.status_code == 200 and r.json()["items"] == ds.n_items + 1
    r = c.post("/items", json={"items": [{"item_id": "H2", "text": "ok"}, {"item_id": first, "text": "dup"}]})
    assert r.status_code == 422 and "already in the catalog" in r.json()["detail"]
    assert c.get("/health").json()["items"] == ds.n_items + 1
    r = c.post("/recommend", json={"history": [first, "H1"], "k": 5, "sample_temperature": 1.5, "seed": 3})
    assert r.status_code == 200 and len({x["item"] for x in r.json()["items"]}) == 5
    for rule in ("blend", "neighbours", "prefix"):  # cold-start slots by each new-item rule
        r = c.post("/recommend", json={"history": [first], "k": 5, "epsilon": 0.2, "new_rule": rule, "tau": 0.2})
        assert r.status_code == 200 and len({x["item"] for x in r.json()["items"]}) == 5
        assert [x["item"] for x in r.json()["items"] if x["new"]] in ([], ["H1"])  # at most max(1, 0.2 * 5) slots
    r = c.post("/recommend", json={"history": [first], "k": 5, "epsilon": 0.2, "new_rule": "nearest"})
    assert r.status_code == 422


def test_sampling_k_distinct_valid_items_seeded(tiger_run):
    from sidrec.decoding.beam import generate
    from sidrec.train.tiger import load_tiger

    model, trie, _ = load_tiger(tiger_run["run"])
    ds = tiger_run["ds"]
    u, hist, _ = ds.eval_inputs("test", model.cfg.max_history)
    users, hist = torch.as_tensor(u[:64]), torch.as_tensor(hist[:64])
    with torch.no_grad():
        a, _ = generate(model, users, hist, trie, k=10, sample_temperature=1.0, seed=5)
        b, _ = generate(model, users, hist, trie, k=10, sample_temperature=1.0, seed=5)
        c, _ = generate(model, users, hist, trie, k=10, sample_temperature=1.0, seed=6)
        beam, _ = generate(model, users, hist, trie, beam=10, k=10)
    assert torch.equal(a, b) and not torch.equal(a, c)  # reproducible under a seed
    assert ((a >= 1) & (a <= ds.n_items)).all()  # only valid items
    assert all(len(set(r)) == 10 for r in a.tolist())  # k distinct per user
    hot = [generate(model, users, hist, trie, k=10, sample_temperature=t, seed=1)[0] for t in (1.0, 4.0)]
    overlap = [(h[:, :, None] == beam[:, None, :]).any(-1).float().mean().item() for h in hot]
    assert overlap[0] > overlap[1]  # hotter = further from the beam lists


def test_category_entropy_hand_worked():
    from sidrec.eval.metrics import category_entropy

    cats = np.array([-1, 0, 0, 1, 2])  # item 0 = padding; items 1..4
    lists = np.array([[1, 2, 3, 4], [1, 2, -1, -1], [3, 4, 1, 2]])
    # user 0: categories 0,0,1,2 -> p = (1/2, 1/4, 1/4): H = 1.5 bits; user 1: 0,0 -> 0; user 2: 1,2,0,0 -> 1.5
    per_user = category_entropy(lists, cats, k=4, reduce=False)
    assert np.allclose(per_user, [1.5, 0.0, 1.5])
    # top-2: user 0 -> 0,0 (0 bits); user 1 -> 0,0 (0); user 2 -> 1,2 (1 bit)
    assert np.isclose(category_entropy(lists, cats, k=2), 1.0 / 3)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sampler_draws_from_the_model_distribution(temperature):
    """First draws of the stochastic beam search follow P(item) at temperature T (two levels of 3 codes with
    fixed logits: P = softmax(l0 / T)[a] * softmax(l1 / T)[b]); all k draws of a row are distinct."""
    from sidrec.decoding.beam import beam_search
    from sidrec.decoding.trie import Trie

    codes = np.array([[a, b] for a in range(3) for b in range(3)])
    trie = Trie(codes, [3, 3])
    l0, l1 = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([0.0, 1.0, -0.5])
    logits = torch.cat([l0, l1])

    def step(tokens, state):
        return logits.expand(len(tokens), -1), state

    n = 20000
    items, _ = beam_search(step, None, batch=n, trie=trie, offsets=[0, 3], beam=4, k=4, reorder_fn=lambda s, i: s,
                           sample_temperature=temperature, generator=torch.Generator().manual_seed(0))
    assert all(len(set(r)) == 4 for r in items[:200].tolist()) and (items >= 1).all()
    freq = np.bincount(items[:, 0].numpy(), minlength=10)[1:] / n
    p = (torch.softmax(l0 / temperature, 0)[:, None] * torch.softmax(l1 / temperature, 0)[None, :]).flatten().numpy()
    assert np.abs(freq - p).max() < 0.015  # ~4 standard errors at n = 20,000


@pytest.mark.slow
def test_coldstart_protocol_end_to_end(cli, syn_dir, tmp_path):
    """Held-out items appear in no training sequence and not in the tokenizer's fit; both models are scored on
    the users whose test item is held out, for every epsilon."""
    from sidrec.data.dataset import load_dataset
    from sidrec.eval.coldstart import held_out_items

    out = tmp_path / "cold"
    code, so, se = cli("evaluate-coldstart", syn_dir, "--out", out, "--holdout", "0.2", "--epsilon", "0.1",
                       "--epsilon", "0.5", "--encoder", "tfidf", "--method", "rqkmeans", "--preset", "small",
                       "--epochs", "2", "--device", "cpu", "--codebook-size", "8", "--levels", "2")
    assert code == 0, se
    ds, seen = load_dataset(syn_dir), load_dataset(out / "data")
    held = held_out_items(ds, 0.2, 0)
    held_raw = set(ds.items["item_id"].astype(str).to_numpy()[held - 1])
    assert not held_raw & set(seen.items["item_id"].astype(str))  # never seen in training or by the tokenizer
    assert json.loads((out / "tok" / "tokenizer.json").read_text())["n_items"] == seen.n_items
    res = json.loads((out / "coldstart.json").read_text())
    assert res["held_out_items"] == len(held)
    rows = res["rows"]
    assert sorted((r["epsilon"], r["model"], r["slots"], r["rule"]) for r in rows) == sorted(
        [(e, "knn", "reserve", rule) for e in (0.1, 0.5) for rule in ("history", "kernel")] +
        [(e, "tiger", sl, rule) for e in (0.1, 0.5) for sl in ("compete", "reserve")
         for rule in ("prefix", "neighbours", "blend")])
    tiger = {(r["epsilon"], r["slots"], r["rule"]): r["recall@10"] for r in rows if r["model"] == "tiger"}
    assert all(tiger[(e, "reserve", rule)] >= tiger[(e, "compete", rule)] for e in (0.1, 0.5)
               for rule in ("prefix", "neighbours", "blend"))  # reserved slots only add hits
    assert all(0 <= r["recall@10"] <= 1 and r["users"] > 0 for r in rows)
    knn = {r["epsilon"]: r["recall@10"] for r in rows if r["model"] == "knn"}
    assert knn[0.5] >= knn[0.1]  # more slots for new items can only add KNN hits
    # --reuse ranks the finished run again (no training) by other prefix lengths; the full prefix reproduces
    # the first ranking exactly, and a run of another hold-out cannot be reused
    stamp = (out / "run" / "metrics.json").stat().st_mtime_ns
    again = ["--out", out, "--holdout", "0.2", "--epsilon", "0.1", "--epsilon", "0.5", "--encoder", "tfidf",
             "--method", "rqkmeans", "--preset", "small", "--device", "cpu", "--codebook-size", "8", "--levels", "2",
             "--reuse"]
    code, so, se = cli("evaluate-coldstart", syn_dir, *again, "--prefix-levels", "1", "--prefix-levels", "2")
    assert code == 0, se
    assert (out / "run" / "metrics.json").stat().st_mtime_ns == stamp
    rows2 = json.loads((out / "coldstart.json").read_text())["rows"]
    assert {r["levels"] for r in rows2 if r["rule"] == "prefix"} == {1, 2}
    key = lambda r: (r["epsilon"], r["model"], r["slots"], r["rule"], r["tau"] or 0)  # noqa: E731
    assert sorted((key(r), r["recall@10"], r["ndcg@10"]) for r in rows) == \
        sorted((key(r), r["recall@10"], r["ndcg@10"]) for r in rows2 if r["levels"] in (2, None))
    # experiments/bench/coldstart_rescore.py scores the saved beams again without the model: the same rows at weights 0
    # (neighbours), 0.5 (blend) and 1 (kernel KNN), and the semantic KNN
    _check_rescore(out, ds, seen, held, rows)
    code, so, se = cli("evaluate-coldstart", syn_dir, *again, "--prefix-levels", "3")
    assert code == 2 and "1..2" in se
    code, so, se = cli("evaluate-coldstart", syn_dir, *[a if a != "0.2" else "0.1" for a in again])
    assert code == 2 and "held out" in se and len(se.strip().splitlines()) == 1
    # a rerun without --reuse resumes the run (here: one more epoch) on the tokens it was trained on, not a refit
    tok_stamp = (out / "tok" / "codes.npy").stat().st_mtime_ns
    code, so, se = cli("evaluate-coldstart", syn_dir, *[a for a in again if a != "--reuse"], "--epochs", "3")
    assert code == 0, se
    assert "resuming the run" in so + se and (out / "tok" / "codes.npy").stat().st_mtime_ns == tok_stamp
    assert json.loads((out / "run" / "metrics.json").read_text())["epochs_run"] == 3


def test_coldstart_protocol_for_an_lcrec_generator(cli, syn_dir, tmp_path):
    """The same protocol through the generator contract for LC-Rec (a tiny causal LM): its run is an lcrec run and
    every new-item rule gives rows next to the baselines."""
    out = tmp_path / "cold-lcrec"
    code, so, se = cli("evaluate-coldstart", syn_dir, "--out", out, "--model", "lcrec", "--lm", "tiny-llama",
                       "--holdout", "0.2", "--epsilon", "0.5", "--encoder", "tfidf", "--method", "rqkmeans",
                       "--codebook-size", "8", "--levels", "2", "--epochs", "1", "--device", "cpu",
                       "--set", "hidden_size=32", "--set", "num_hidden_layers=1")
    assert code == 0, se
    assert json.loads((out / "run" / "config.json").read_text())["kind"] == "lcrec"
    rows = json.loads((out / "coldstart.json").read_text())["rows"]
    assert {(r["model"], r["rule"]) for r in rows if r["slots"] == "reserve"} == {
        ("lcrec", "prefix"), ("lcrec", "neighbours"), ("lcrec", "blend"), ("knn", "history"), ("knn", "kernel")}
    assert all(0 <= r["recall@10"] <= 1 and r["users"] > 0 for r in rows)


def _check_rescore(out, ds, seen, held, rows):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from sidrec.embeddings.text import embed_new_texts

    seen_emb = np.load(out / "emb" / "item_emb.npy")
    full = np.zeros((ds.n_items + 1, seen_emb.shape[1]), dtype=np.float32)
    pos = pd.Series(ds.items["item_idx"].to_numpy(), index=ds.items["item_id"].astype(str).to_numpy())
    full[pos[seen.items["item_id"].astype(str).to_numpy()].to_numpy()] = seen_emb[1:]
    full[held] = embed_new_texts(out / "emb", ds.items.set_index("item_idx").loc[held, "text"].astype(str).tolist())
    np.save(out / "full_emb.npy", full)
    script = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "coldstart_rescore.py"
    r = subprocess.run([sys.executable, str(script), str(out / "coldstart_beams.npz"), "--embeddings",
                        str(out / "full_emb.npy"), "--taus", "0.1", "--weights", "0", "0.5", "1", "--epsilons", "0.1",
                        "0.5", "--json", str(out / "rescore.jsonl")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = {(x["epsilon"], x["rule"], x["weight"]): x["recall@10"] for x in map(json.loads, open(out / "rescore.jsonl"))}
    want = {(x["epsilon"], {"neighbours": "blend", "kernel": "blend"}.get(x["rule"], x["rule"]),
             {"neighbours": 0.0, "blend": 0.5, "kernel": 1.0}.get(x["rule"])): x["recall@10"]
            for x in rows if x["rule"] != "prefix" and x["slots"] == "reserve"}
    assert got.keys() == want.keys()
    assert all(abs(got[key] - want[key]) < 1e-9 for key in got), (got, want)


@pytest.mark.parametrize("kind", ["tiger", "lcrec"])
def test_prefix_scores_equal_teacher_forcing(kind):
    """Prefix scores through the decode hooks (history encoded once) equal teacher-forced log-probabilities."""
    from sidrec.decoding.beam import prefix_scores
    from sidrec.models.tiger import TIGER, TIGERConfig, Vocab

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:40]
    if kind == "tiger":
        model = TIGER(TIGERConfig(preset="custom", n_layers=1, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0,
                                  max_history=4), Vocab([4, 4, 4]), codes).eval()
    else:
        from sidrec.models.lcrec import LCRec, LCRecConfig

        model = LCRec(LCRecConfig(max_history=4, dropout=0.0, hidden_size=32, num_hidden_layers=1),
                      [4, 4, 4], codes).eval()
    hist = torch.randint(1, 41, (5, 4))
    hist[0, :2] = 0
    users, items = torch.arange(5), torch.tensor([3, 7, 11, 40])
    got = prefix_scores(model, users, hist, items, levels=2, rows=8)  # several user chunks
    with torch.no_grad():
        logits, labels = model.teacher_forced(users.repeat_interleave(4), hist.repeat_interleave(4, 0), items.repeat(5))
        want = torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None])[..., 0][:, :2].sum(1).reshape(5, 4)
    assert torch.allclose(got, want, atol=1e-4)


def test_reserved_slots_keep_the_best_decoded_items():
    """slots="reserve": the best k - cap decoded items stay, in order, then the new items by prefix score."""
    from sidrec.decoding.beam import merge_new_items

    items = torch.tensor([[5, 6, 7, 8]])
    scores = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    new = torch.tensor([20, 21, 22])
    ns = torch.tensor([[-9.0, -0.5, -7.0]])  # 21 beats every decoded item, 20 and 22 none
    got, _ = merge_new_items(items, scores, new, ns, epsilon=0.5, slots="reserve")
    assert got.tolist() == [[5, 6, 21, 22]]
    got, _ = merge_new_items(items, scores, new, ns, epsilon=0.5, slots="compete")
    assert got.tolist() == [[21, 5, 6, 7]]


def test_semantic_knn_and_reserved_lists_hand_worked():
    """TIGER's semantic KNN: cosine of each new item to the mean of the history's raw embeddings (padding 0
    excluded, not averaged in); the baseline's list holds max(1, int(eps * k)) new items, then nothing (-1)."""
    from sidrec.decoding.newitems import reserved_lists, semantic_knn

    emb = np.array([[9, 9], [4, 0], [0, 1], [0, 3]], dtype=np.float32)  # row 0 = padding, never averaged
    new_emb = np.array([[1, 0], [1, 1], [0, 1], [2, 1]], dtype=np.float32)  # new items 10, 11, 12, 13
    hist = np.array([[0, 0, 1],      # mean (4, 0): 10, then 13 (cos .894), 11 (.707), 12 (0)
                     [0, 1, 3],      # mean (2, 1.5): 11 (.990), 13 (.984), 10 (.8), 12 (.6)
                     [2, 3, 3]])     # mean (0, 7/3): 12, 11, 13, 10
    order = semantic_knn(hist, emb, new_emb)
    mean = np.array([[4, 0], [2, 1.5], [0, 7 / 3]])
    cos = (mean / np.linalg.norm(mean, axis=1, keepdims=True)) @ (new_emb / np.linalg.norm(new_emb, axis=1,
                                                                                          keepdims=True)).T
    assert order.tolist() == np.argsort(-cos, axis=1, kind="stable").tolist()
    assert order.tolist() == [[0, 3, 1, 2], [1, 3, 0, 2], [2, 1, 3, 0]]
    new = torch.tensor([10, 11, 12, 13])
    assert reserved_lists(order, new, k=5, epsilon=0.5).tolist()[0] == [10, 13, -1, -1, -1]
    assert reserved_lists(order, new, k=5, epsilon=0.1).tolist()[2] == [12, -1, -1, -1, -1]  # at least one slot
    assert reserved_lists(order, new, k=10, epsilon=1.0).tolist()[2] == [12, 11, 13, 10] + [-1] * 6  # all 4 at most


def test_neighbour_scores_hand_worked():
    """log sum_b P(b) exp((cos(new, b) - 1) / tau) over the decoded items, invalid slots (-1) ignored."""
    from sidrec.decoding.newitems import neighbour_scores, unit_rows

    e = np.eye(3, dtype=np.float32)
    vecs = unit_rows(np.vstack([np.zeros(3), e[0], 2 * e[1]]))  # row 0 = padding; items 1, 2 (scale ignored)
    new = unit_rows(np.vstack([e[0], e[0] + e[1], e[2]]))  # twin of 1, between 1 and 2, far from both
    items = torch.tensor([[1, 2, -1]])
    scores = torch.tensor([[np.log(0.6), np.log(0.3), 0.0]])
    got = neighbour_scores(items, scores, vecs, new, tau=0.5)[0]
    c = 1 - 2 ** -0.5  # 1 - cos(45 degrees)
    want = [np.log(0.6 + 0.3 * np.exp(-2)), np.log(0.9) - c / 0.5, np.log(0.9) - 2]
    assert np.allclose(got.numpy(), want, atol=1e-5)
    assert neighbour_scores(items, scores, vecs, new, tau=1e-3)[0, 0] == pytest.approx(np.log(0.6), abs=1e-5)
    with pytest.raises(SidrecError, match="tau"):
        neighbour_scores(items, scores, vecs, new, tau=0)


def test_new_items_ranked_by_their_decoded_neighbours(tiger_run):
    """Rule "neighbours": of two new items, the one whose text is the top decoded item's ranks above one with an
    unrelated text (whatever their ID prefixes score), and the run keeps its catalog's vectors for it."""
    from sidrec.serving.recommender import Recommender

    ds, rec = tiger_run["ds"], Recommender.load(tiger_run["run"])
    assert np.load(tiger_run["run"] / "embeddings" / "item_emb.npy").shape[0] == ds.n_items + 1
    hist = ds.items["item_id"].astype(str).tolist()[3:6]
    top = rec.recommend(hist, k=1)[0]["item"]
    far = ds.items["item_id"].astype(str).tolist()[-1]
    rec.add_items(["FAR", "NEAR"], ["zzz qqq " + _text(ds, far), _text(ds, top)])
    rows = rec.recommend(hist, k=10, epsilon=0.2, new_rule="neighbours")
    new = [r["item"] for r in rows if r["new"]]
    assert new[:1] == ["NEAR"] and rows[0]["item"] == "NEAR"  # a twin of the top item takes its probability
    for rule in ("prefix", "blend"):  # blend (the default): the history's items pass half of the probability
        rows = rec.recommend(hist, k=10, epsilon=0.2, new_rule=rule)
        assert len({r["item"] for r in rows}) == 10 and 1 <= sum(r["new"] for r in rows) <= 2
    with pytest.raises(SidrecError, match="rule"):
        rec.recommend(hist, k=10, epsilon=0.2, new_rule="nearest")
    with pytest.raises(SidrecError, match="history weight"):
        rec.recommend(hist, k=10, epsilon=0.2, history_weight=1.0)
    reserved = rec.recommend(hist, k=10, epsilon=0.2, new_slots="reserve")  # both new items take the 2 slots
    assert {r["item"] for r in reserved if r["new"]} == {"NEAR", "FAR"} and [r["new"] for r in reserved][-2:] == [True] * 2
    with pytest.raises(SidrecError, match="slots"):
        rec.recommend(hist, k=10, epsilon=0.2, new_slots="all")


def test_coldstart_with_embeddings_made_beforehand(cli, syn_dir, tmp_path):
    """`--embeddings`: the seen items' rows of a whole-catalog artifact become the run's embeddings (the encoder's
    record kept), the held-out items' rows stand for their text; a tf-idf artifact (fitted on the held-out
    items' text too) is one clear line."""
    from sidrec.data.dataset import load_dataset

    ds = load_dataset(syn_dir)
    rng = np.random.default_rng(0)
    full = np.vstack([np.zeros((1, 24)), rng.normal(size=(ds.n_items, 24))]).astype(np.float32)
    src = tmp_path / "emb"
    src.mkdir()
    np.save(src / "item_emb.npy", full)
    meta = {"kind": "text", "encoder": "minilm", "config": {"encoder": "minilm"}, "shape": list(full.shape)}
    (src / "embeddings.json").write_text(json.dumps(meta))
    out = tmp_path / "cold"
    args = ["--holdout", "0.2", "--epsilon", "0.5", "--method", "rqkmeans", "--preset", "small", "--epochs", "1",
            "--device", "cpu", "--codebook-size", "8", "--levels", "2"]
    code, so, se = cli("evaluate-coldstart", syn_dir, "--out", out, "--embeddings", src, *args)
    assert code == 0, se
    seen = load_dataset(out / "data")
    got = np.load(out / "emb" / "item_emb.npy")
    pos = {x: i + 1 for i, x in enumerate(ds.items["item_id"].astype(str))}
    want = full[[pos[x] for x in seen.items["item_id"].astype(str)]]
    assert got.shape == (seen.n_items + 1, 24) and np.array_equal(got[1:], want)
    assert json.loads((out / "emb" / "embeddings.json").read_text())["encoder"] == "minilm"
    assert {r["model"] for r in json.loads((out / "coldstart.json").read_text())["rows"]} == {"tiger", "knn"}
    (src / "embeddings.json").write_text(json.dumps({**meta, "encoder": "tfidf"}))
    code, so, se = cli("evaluate-coldstart", syn_dir, "--out", tmp_path / "c2", "--embeddings", src, *args)
    assert code == 2 and "tf-idf" in se and len(se.strip().splitlines()) == 1


def test_coldstart_protocol_for_vqrec(cli, syn_dir, tmp_path):
    """The same protocol and baseline for VQ-Rec : its OPQ is fitted on the seen items only, new items get
    codes from their text and join the full ranking; reserved slots only add hits; errors are one line."""
    from sidrec.data.dataset import load_dataset
    from sidrec.tokenizers.opq import OPQTokenizer

    out = tmp_path / "coldvq"
    args = ["--out", out, "--model", "vqrec", "--holdout", "0.2", "--epsilon", "0.2", "--epsilon", "0.5",
            "--encoder", "tfidf", "--epochs", "3", "--device", "cpu", "--set", "n_levels=4", "--set", "codebook_size=8",
            "--set", "opq_iters=2"]
    code, so, se = cli("evaluate-coldstart", syn_dir, *args)
    assert code == 0, se
    seen = load_dataset(out / "data")
    codes = np.load(out / "run" / "codes.npy")
    assert codes.shape == (seen.n_items + 1, 4)  # the run (and its OPQ) knows the seen items only
    emb = np.load(out / "emb" / "item_emb.npy")
    assert np.array_equal(OPQTokenizer.load(out / "run" / "opq").encode(emb[1:]), codes[1:])
    rows = json.loads((out / "coldstart.json").read_text())["rows"]
    assert sorted((r["epsilon"], r["model"], r["slots"], r["levels"]) for r in rows if r["model"] == "vqrec") == [
        (e, "vqrec", sl, None) for e in (0.2, 0.5) for sl in ("compete", "reserve")]
    vq = {(r["epsilon"], r["slots"]): r["recall@10"] for r in rows if r["model"] == "vqrec"}
    assert all(vq[(e, "reserve")] >= vq[(e, "compete")] for e in (0.2, 0.5))
    assert vq[(0.5, "reserve")] >= vq[(0.2, "reserve")]  # more reserved slots can only add hits
    assert {r["users"] for r in rows} == {rows[0]["users"]} and rows[0]["users"] > 0
    code, so, se = cli("evaluate-coldstart", syn_dir, *args, "--reuse")
    assert code == 0, se
    assert json.loads((out / "coldstart.json").read_text())["rows"] == rows  # deterministic ranking, no retraining
    for bad, msg in ((["--reuse", "--prefix-levels", "1"], "generators"), (["--init", str(out)], "--model vqrec")):
        a = args if msg != "--model vqrec" else [x if x != "vqrec" else "tiger" for x in args]
        code, so, se = cli("evaluate-coldstart", syn_dir, *a, *bad)
        assert code == 2 and msg in se and len(se.strip().splitlines()) == 1, se
    code, so, se = cli("evaluate-coldstart", syn_dir, *args[:1], tmp_path / "r", *args[2:], "--set", "codes=random")
    assert code == 2 and "cannot encode" in se
