"""VQ-Rec: Gumbel-Sinkhorn permutations, code pooling, pre-training, fine-tuning, cold start, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sidrec.models.vqrec import (VQRec, VQRecConfig, gumbel_sinkhorn, hard_permutation,
                                 straight_through_permutation)

SMALL = dict(n_levels=4, codebook_size=16, dim=32, n_layers=1, n_heads=2, inner=32, dropout=0.1, max_history=20)


def _prep(tmp, name, seed, n_items=150):
    from sidrec.data.prepare import prepare
    from sidrec.data.sources import read_source

    out = tmp / name
    prepare(read_source("synthetic", [], synthetic={"n_users": 400, "n_items": n_items, "seed": seed}), out,
            source="synthetic")
    return out


@pytest.fixture(scope="module")
def vq(tmp_path_factory):
    """Two pre-training domains, one pre-trained run, one target fine-tuned from it."""
    from sidrec.data.dataset import load_dataset
    from sidrec.embeddings.text import EmbedConfig
    from sidrec.train.loop import TrainConfig
    from sidrec.train.vqrec import VQRecTrainConfig, finetune_vqrec, pretrain_vqrec

    tmp = tmp_path_factory.mktemp("vq")
    doms = [_prep(tmp, f"src{s}", s) for s in (11, 12)]
    target = _prep(tmp, "target", 13)
    ecfg = EmbedConfig(encoder="tfidf", dim=32)
    mcfg = VQRecConfig(**SMALL)
    pre = pretrain_vqrec([load_dataset(d) for d in doms], tmp / "pre", mcfg, VQRecTrainConfig(),
                         TrainConfig(epochs=6, batch_size=64, patience=6, seed=0, device="cpu"), ecfg, log=lambda s: None)
    ft = finetune_vqrec(load_dataset(target), tmp / "ft", init=tmp / "pre", model_cfg=mcfg,
                        vq_cfg=VQRecTrainConfig(permutation_epochs=3),
                        train_cfg=TrainConfig(epochs=12, batch_size=64, patience=12, seed=0, device="cpu"),
                        embed_cfg=ecfg, log=lambda s: None)
    return {"tmp": tmp, "domains": doms, "target": target, "pre": pre, "ft": ft}


def test_gumbel_sinkhorn_is_doubly_stochastic():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 8)
    p = gumbel_sinkhorn(logits, tau=0.7, iters=200, noise=1.0)
    assert torch.allclose(p.sum(-1), torch.ones(3, 8), atol=1e-3)
    assert torch.allclose(p.sum(-2), torch.ones(3, 8), atol=1e-5)
    assert (p >= 0).all()
    # the default 3 iterations end on a column normalisation: columns exact, rows close
    p3 = gumbel_sinkhorn(logits, tau=0.7, iters=3, noise=1.0)
    assert torch.allclose(p3.sum(-2), torch.ones(3, 8), atol=1e-5)
    assert (p3.sum(-1) - 1).abs().max() < 0.5


def test_hard_permutation_is_a_permutation_and_receives_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 10, 10, requires_grad=True)
    P = straight_through_permutation(logits, tau=0.7, iters=3, noise=0.1)
    hard = P.detach().round()
    assert torch.allclose(P.detach(), hard, atol=1e-6)  # forward pass: the hard permutation itself
    assert torch.equal(hard.sum(-1), torch.ones(4, 10)) and torch.equal(hard.sum(-2), torch.ones(4, 10))
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    w = torch.randn(4, 10, 10)
    (P * w).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # unlike ceil(), which has zero gradient
    # the hard permutation maximises the total score of its input (checked against all of a 3x3 case)
    s = torch.tensor([[[0.1, 0.9, 0.0], [0.8, 0.05, 0.1], [0.2, 0.1, 0.7]]])
    assert torch.equal(hard_permutation(s)[0], torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))


def test_item_representation_is_the_mean_of_its_code_embeddings():
    codes = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [15, 0, 7, 7]])
    m = VQRec(VQRecConfig(**SMALL), codes)
    E = m.code_emb.detach()
    want = torch.stack([(E[0, 1] + E[1, 2] + E[2, 3] + E[3, 4]) / 4, (E[0, 15] + E[1, 0] + E[2, 7] + E[3, 7]) / 4])
    assert torch.allclose(m.item_reps()[1:].detach(), want, atol=1e-6)
    # a permutation of the tables moves rows: with P swapping rows 1 and 2 of table 0, item 1 reads E[0, 1] -> E[0, 2]
    P = torch.eye(16).repeat(4, 1, 1)
    P[0, [1, 2]] = P[0, [2, 1]]
    got = m.reps_from_codes(torch.tensor([[1, 2, 3, 4]]), P @ m.code_emb).detach()[0]
    assert torch.allclose(got, (E[0, 2] + E[1, 2] + E[2, 3] + E[3, 4]) / 4, atol=1e-6)


def test_pretraining_lowers_the_loss_on_two_domains(vq):
    log = [json.loads(line) for line in (vq["tmp"] / "pre" / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 0.1
    meta = json.loads((vq["tmp"] / "pre" / "vqrec.json").read_text())
    assert [d["offset"] for d in meta["domains"]] == [0, 150]
    codes = np.load(vq["tmp"] / "pre" / "codes.npy")
    assert codes.shape == (301, 4) and codes.max() < 16
    assert len(vq["pre"]["validation"]["domains"]) == 2


def test_semi_synthetic_negative_changes_the_loss():
    torch.manual_seed(0)
    codes = np.random.default_rng(0).integers(0, 16, size=(31, 4))
    m = VQRec(VQRecConfig(**SMALL), codes).eval()
    seq = torch.randint(1, 31, (8, 6))
    tgt = torch.randint(1, 31, (8, 6))
    base = m.contrastive_loss(seq, tgt, rho=0.0)
    torch.manual_seed(1)
    with_neg = m.contrastive_loss(seq, tgt, rho=0.75)
    assert with_neg > base  # one more negative in every softmax


def test_finetuned_model_beats_an_untrained_one(vq):
    from sidrec.data.dataset import load_dataset
    from sidrec.eval.evaluate import EvalConfig, evaluate_scorer
    from sidrec.train.vqrec import load_vqrec

    ds = load_dataset(vq["target"])
    trained, meta = load_vqrec(vq["tmp"] / "ft")
    torch.manual_seed(0)
    untrained = VQRec(trained.cfg, trained.codes).eval()
    ev = EvalConfig(ks=(10, 50), max_history=20)
    r_untrained = evaluate_scorer(lambda u, h: untrained.score(h), ds, "test", ev)
    r_trained = evaluate_scorer(lambda u, h: trained.score(h), ds, "test", ev)
    assert r_trained["ndcg@10"] > r_untrained["ndcg@10"] + 0.02
    # save/load round-trip: the loaded run reproduces the test metrics it wrote
    assert r_trained["ndcg@10"] == pytest.approx(vq["ft"]["test"]["ndcg@10"], abs=1e-6)
    assert meta["stage"] == "finetune" and set(vq["ft"]["stages"]) == {"permutation", "finetune"}
    assert vq["ft"]["ablation"] == "full"


def test_cold_start_item_is_scored_and_recommended_without_retraining(vq):
    from sidrec.data.dataset import load_dataset
    from sidrec.serving.recommender import VQRecRecommender

    ds = load_dataset(vq["target"])
    rec = VQRecRecommender.load(vq["tmp"] / "ft")
    history = ds.items["item_id"].astype(str).tolist()[:3]
    top = rec.recommend(history, k=20)
    # the best-ranked item without a twin vector (a code twin's learned vector is not shared by new items)
    pick = next(r for r in top if int(rec.model.twin_idx[int(rec.cat.index[r["item"]])]) == 0)
    best = ds.items.set_index(ds.items["item_id"].astype(str)).loc[pick["item"]]
    n_before = rec.model.n_items
    # a new item that only has text: a twin of that item's text gets its codes and its score
    rec.add_items(["NEW-1", "NEW-2"], [best["text"], "completely unrelated words zzz"])
    assert rec.model.n_items == n_before + 2
    after = rec.recommend(history, k=21)
    new = [r for r in after if r["item"] == "NEW-1"]
    assert new and new[0]["new"] and new[0]["score"] == pytest.approx(pick["score"], abs=1e-4)
    # and the new item can be part of a history
    assert len(rec.recommend(history + ["NEW-2"], k=3)) == 3


def test_cli_cold_start_recommend(vq, cli, tmp_path):
    f = tmp_path / "new.csv"
    f.write_text("item_id,text,title\nN1,hello world gadget,Gadget\n")
    from sidrec.data.dataset import load_dataset

    ids = load_dataset(vq["target"]).items["item_id"].astype(str).tolist()
    code, out, err = cli("recommend", vq["tmp"] / "ft", "--history", ids[0], "--history", ids[1], "--k", "151",
                         "--new-items", f)
    assert code == 0, err
    assert "N1 (new)" in out  # k = whole catalog + 1: the new item is ranked
    code, _, err = cli("recommend", vq["tmp"] / "pre", "--history", ids[0])
    assert code == 2 and "fine-tune it" in err


def test_embed_new_texts_matches_catalog_embedding(vq):
    from sidrec.data.dataset import load_dataset
    from sidrec.embeddings.text import embed_new_texts

    ds = load_dataset(vq["target"])
    emb = np.load(vq["tmp"] / "ft" / "embeddings" / "item_emb.npy")
    texts = ds.items["text"].astype(str).tolist()[:5]
    assert np.allclose(embed_new_texts(vq["tmp"] / "ft" / "embeddings", texts), emb[1:6], atol=1e-5)


def test_bad_input_one_line_exit_2(vq, cli, tmp_path):
    pre = vq["tmp"] / "pre"
    target = vq["target"]
    # a pre-trained run of another code layout than asked for
    code, _, err = cli("train", "vqrec", target, "--init", pre, "--out", tmp_path / "x", "--codes-per-item", "8",
                       "--encoder", "tfidf")
    assert code == 2 and "n_levels=4" in err and len(err.strip().splitlines()) == 1
    # codes of another width
    from sidrec.data.dataset import load_dataset
    from sidrec.tokenizers.opq import OPQConfig, OPQTokenizer

    ds = load_dataset(target)
    emb = np.load(vq["tmp"] / "ft" / "embeddings" / "item_emb.npy")[1:]
    tok = OPQTokenizer(OPQConfig(n_levels=8, codebook_size=16)).fit(emb, log=lambda s: None)
    tok.save(tmp_path / "tok8")
    meta = json.loads((tmp_path / "tok8" / "tokenizer.json").read_text())
    meta["dataset_fingerprint"] = ds.fingerprint
    (tmp_path / "tok8" / "tokenizer.json").write_text(json.dumps(meta))
    code, _, err = cli("train", "vqrec", target, "--init", pre, "--out", tmp_path / "y", "--tokens", tmp_path / "tok8")
    assert code == 2 and "width 8" in err and len(err.strip().splitlines()) == 1
    # a target dataset without text
    import pandas as pd

    notext = tmp_path / "notext"
    import shutil

    shutil.copytree(target, notext)
    items = pd.read_parquet(notext / "items.parquet")
    items["text"] = ""
    items.to_parquet(notext / "items.parquet")
    (notext / "manifest.json").unlink()  # a dataset edited by hand carries no manifest
    code, _, err = cli("train", "vqrec", notext, "--init", pre, "--out", tmp_path / "z")
    assert code == 2 and "no item has text" in err and len(err.strip().splitlines()) == 1
    # neither or both of a target and --pretrain
    code, _, err = cli("train", "vqrec", "--out", tmp_path / "w")
    assert code == 2 and "--pretrain" in err


def test_minionerec_source_stitches_histories(tmp_path):
    import gzip

    from sidrec.data.sources import read_source

    (tmp_path / "x.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(6)}))
    rows = ["user_id,history_item_id,item_id", 'u1,"[0, 1, 2]",3', 'u1,"[0, 1, 2, 3]",4', 'u2,"[5]",0']
    with gzip.open(tmp_path / "valid_x.csv.gz", "wt") as f:
        f.write("\n".join(rows[:2] + rows[3:]) + "\n")
    (tmp_path / "test_x.csv").write_text("\n".join([rows[0], rows[2]]) + "\n")
    raw = read_source("minionerec", [tmp_path / "valid_x.csv.gz", tmp_path / "test_x.csv", tmp_path / "x.item.json"])
    seqs = raw.interactions.groupby("user", sort=True)["item"].apply(list).to_dict()
    assert seqs == {"u1": ["0", "1", "2", "3", "4"], "u2": ["5", "0"]}
    assert len(raw.items) == 6
    (tmp_path / "bad.csv").write_text('user_id,history_item_id,item_id\nu1,"[0, 1",3\n')
    from sidrec.errors import SidrecError

    with pytest.raises(SidrecError, match=r"bad.csv:2: history_item_id"):
        read_source("minionerec", [tmp_path / "bad.csv"])


def test_recommend_errors_one_line_exit_2(vq, cli, tmp_path):
    from sidrec.data.dataset import load_dataset

    run = vq["tmp"] / "ft"
    first = load_dataset(vq["target"]).items["item_id"].astype(str).iloc[0]
    cases = [(["--history", first, "--k", "999"], "larger than the catalog"),
             (["--history", "no-such-item"], "unknown item id"),
             ([], "empty history"),
             (["--history", first, "--new-items", tmp_path / "missing.csv"], "file not found")]
    for args, msg in cases:
        code, _, err = cli("recommend", run, *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
    bad = tmp_path / "new.csv"
    bad.write_text("item_id,text\nX1,\n")
    code, _, err = cli("recommend", run, "--history", first, "--new-items", bad)
    assert code == 2 and "record 1: empty text" in err


def test_tokens_of_another_dataset_are_refused(vq, cli, tmp_path):
    """A tokens directory made for one dataset, used to train on another: one line, exit 2."""
    src = vq["domains"][0]
    code, _, err = cli("tokenize", src, "--method", "opq", "--embeddings", vq["tmp"] / "pre" / "embeddings" /
                       f"0-{src.name}", "--levels", "4", "--codebook-size", "16", "--out", tmp_path / "tok")
    assert code == 0, err
    code, _, err = cli("train", "tiger", vq["target"], "--tokens", tmp_path / "tok", "--out", tmp_path / "t",
                       "--preset", "small", "--epochs", "1")
    assert code == 2 and "another dataset" in err and len(err.strip().splitlines()) == 1, err


def test_http_serving_recommends_and_takes_cold_start_items(vq):
    from fastapi.testclient import TestClient

    from sidrec.data.dataset import load_dataset
    from sidrec.serving.app import create_app

    client = TestClient(create_app(vq["tmp"] / "ft"))
    assert client.get("/health").json()["kind"] == "vqrec"
    items = load_dataset(vq["target"]).items
    hist = items["item_id"].astype(str).tolist()[:2]
    r = client.post("/recommend", json={"history": hist, "k": 5})
    assert r.status_code == 200 and len(r.json()["items"]) == 5
    r = client.post("/recommend", json={"history": ["nope"], "k": 5})
    assert r.status_code == 422 and "unknown item" in r.json()["detail"]
    from sidrec.train.vqrec import load_vqrec

    twin_idx = load_vqrec(vq["tmp"] / "ft")[0].twin_idx  # items with a twin vector: new items do not share it
    pos = {i: n + 1 for n, i in enumerate(items["item_id"].astype(str))}
    pick = next(x for x in client.post("/recommend", json={"history": hist, "k": 20}).json()["items"]
                if int(twin_idx[pos[x["item"]]]) == 0)
    twin = items.set_index(items["item_id"].astype(str)).loc[pick["item"], "text"]
    assert client.post("/items", json={"items": [{"item_id": "HTTP-NEW", "text": twin}]}).json()["added"] == 1
    top = client.post("/recommend", json={"history": hist, "k": 21}).json()["items"]
    new = [x for x in top if x["item"] == "HTTP-NEW"]
    assert new and abs(new[0]["score"] - pick["score"]) < 1e-4  # the text twin scores as high as that item
    assert pick["item"] in [x["item"] for x in top]


def test_twin_index_hand_worked():
    from sidrec.models.vqrec import twin_index

    codes = torch.tensor([[0, 0], [1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]])  # row 0 = padding
    assert twin_index(codes).tolist() == [0, 1, 2, 3, 0, 4, 5]  # one vector per twin item, none for items 0, 4


def test_twin_vectors_break_the_tie_of_code_twins():
    """Items 1 and 2 share every code; users go 3 -> 1, never 3 -> 2. Without twin vectors the two tie exactly for
    every user; with them the model learns to rank 1 above 2. Items added later get no twin vector."""
    codes = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    seq = torch.tensor([[0, 0, 4, 3]] * 32)
    tgt = torch.tensor([[0, 4, 3, 1]] * 32)
    out = {}
    for twins in (False, True):
        torch.manual_seed(0)
        m = VQRec(VQRecConfig(**{**SMALL, "dropout": 0.0, "twin_vectors": twins}), codes)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for _ in range(60):
            opt.zero_grad()
            m.loss(seq, tgt).backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            out[twins] = m.score(seq[:1])[0]
        if twins:
            assert m.twin_emb.shape == (3, 32)  # items 1 and 2 (+ the unused row 0)
            m.set_codes(np.concatenate([codes, codes[4:5]]))  # a new item with item 4's codes
            with torch.no_grad():
                reps = m.item_reps()
            assert m.twin_idx.tolist() == [0, 1, 2, 0, 0, 0]
            assert torch.equal(reps[5], reps[4])  # text-only: exactly its code twin's vector
    assert out[False][1] == out[False][2]
    assert out[True][1] > out[True][2] + 0.1


def test_finetune_with_twin_vectors_from_a_pretrained_run(vq, tmp_path):
    """A pre-trained run has no twin vectors: fine-tuning adds them (from zero), trains them with the code tables,
    saves and reloads them."""
    from sidrec.data.dataset import load_dataset
    from sidrec.embeddings.text import EmbedConfig
    from sidrec.train.loop import TrainConfig
    from sidrec.train.vqrec import VQRecTrainConfig, finetune_vqrec, load_vqrec

    mcfg = VQRecConfig(**{**SMALL, "twin_vectors": True})
    finetune_vqrec(load_dataset(vq["target"]), tmp_path / "ft", init=vq["tmp"] / "pre", model_cfg=mcfg,
                   vq_cfg=VQRecTrainConfig(permutation=False), embed_cfg=EmbedConfig(encoder="tfidf", dim=32),
                   train_cfg=TrainConfig(epochs=2, batch_size=64, patience=2, seed=0, device="cpu"), log=lambda s: None)
    m, _ = load_vqrec(tmp_path / "ft")
    n_twins = int((m.twin_idx > 0).sum())
    assert n_twins > 0 and m.twin_emb.shape[0] == n_twins + 1  # 4 codes of 16 on 150 items: twins exist
    assert m.twin_emb[1:].abs().sum() > 0  # trained in stage 2 (tables only), not left at zero


def test_twin_vectors_default_on_for_targets_off_for_pretraining_and_old_runs(vq, tmp_path):
    """Twin vectors are on by default for a target run, never in pre-training, not inherited from a pre-trained run's
    config, and a run written before the option existed loads without them."""
    import json
    import shutil

    from safetensors.torch import load_file
    from sidrec.train.vqrec import init_model_config, load_vqrec

    assert VQRecConfig().twin_vectors
    assert "twin_emb" not in load_file(str(vq["tmp"] / "pre" / "model.safetensors"))
    assert "twin_vectors" not in init_model_config(vq["tmp"] / "pre")
    old = tmp_path / "old"
    shutil.copytree(vq["tmp"] / "pre", old)  # any run without twins stands in for an old one: drop the key
    meta = json.loads((old / "vqrec.json").read_text())
    meta["model"].pop("twin_vectors", None)
    (old / "vqrec.json").write_text(json.dumps(meta))
    (old / "manifest.json").unlink(missing_ok=True)  # runs of that time had no manifest
    m, _ = load_vqrec(old)
    assert m.twin_emb is None
