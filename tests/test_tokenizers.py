"""Tokenizer contract and behaviour: planted clusters, uniqueness, save/load, determinism, LETTER's effects."""

import json

import numpy as np
import pytest

from sidrec.tokenizers.base import SemanticIDs
from sidrec.tokenizers.collisions import append_position, collision_stats, sinkhorn_reassign
from sidrec.tokenizers.opq import OPQConfig, OPQTokenizer
from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer
from sidrec.tokenizers.rqvae import RQVAEConfig, RQVAETokenizer, make_config

QUIET = dict(log=lambda s: None)


def planted(n_clusters=8, per=50, dim=32, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)) * 3
    labels = np.repeat(np.arange(n_clusters), per)
    return (centers[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def purity(codes, labels):
    """Each planted cluster maps to one level-1 code and no code mixes clusters."""
    pairs = set(zip(labels.tolist(), codes.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(codes.tolist()))


SMALL = RQVAEConfig(hidden=(64,), code_dim=8, n_levels=3, codebook_size=8, epochs=150, log_every=1000,
                    learning_rate=3e-3, device="cpu")


@pytest.mark.parametrize("make", [lambda: RQVAETokenizer(SMALL),
                                  lambda: RQKMeansTokenizer(RQKMeansConfig(n_levels=3, codebook_size=8))])
def test_planted_clusters_recovered_at_level_1_and_ids_unique(make):
    x, labels = planted()
    tok = make().fit(x, **QUIET)
    assert purity(tok.codes_[:, 0], labels)
    assert collision_stats(tok.sids_)["rate"] == 0.0
    assert tok.sids_.shape[1] == tok.codes_.shape[1] + 1


def test_same_seed_same_codes_and_save_load(tmp_path):
    x, _ = planted(seed=1)
    a = RQVAETokenizer(SMALL).fit(x, **QUIET)
    b = RQVAETokenizer(SMALL).fit(x, **QUIET)
    assert (a.sids_ == b.sids_).all()
    a.save(tmp_path / "tok")
    ids = SemanticIDs(tmp_path / "tok")
    assert (ids.codes == a.sids_).all() and ids.level_sizes[:3] == [8, 8, 8]


def test_collision_handlers():
    codes = np.array([[0, 1], [0, 1], [0, 1], [2, 3], [2, 4]])
    app = append_position(codes)
    assert app[:, -1].tolist() == [0, 1, 2, 0, 0]
    assert collision_stats(codes) == {"rate": 0.6, "items_colliding": 3, "largest_group": 3, "distinct_ids": 3}
    rng = np.random.default_rng(0)
    res = rng.normal(size=(5, 4))
    cb = rng.normal(size=(8, 4))
    out, rounds = sinkhorn_reassign(codes, res, cb, epsilon=0.003, rounds=20)
    assert collision_stats(out)["rate"] == 0.0 and (out[:, 0] == codes[:, 0]).all() and rounds >= 1


def test_letter_raises_cf_overlap_over_rqvae():
    """Text says one partition, collaborative embeddings another; LETTER's codes must follow CF more."""
    from sidrec.tokenizers.report import cf_overlap

    x, text_lab = planted(n_clusters=8, per=40, dim=32, spread=3.0, seed=2)
    rng = np.random.default_rng(5)
    cf_lab = rng.permutation(len(x)) % 16  # unrelated to the text clusters
    cf = (rng.normal(size=(16, 8)) * 3)[cf_lab] + 0.1 * rng.normal(size=(len(x), 8))
    cfg = RQVAEConfig(hidden=(64,), code_dim=8, n_levels=2, codebook_size=16, epochs=600, log_every=1000,
                      learning_rate=3e-3, device="cpu")
    plain = RQVAETokenizer(cfg).fit(x, **QUIET)
    letter = RQVAETokenizer(make_config("tiger", **{**cfg.__dict__, "cf_weight": 3.0, "div_weight": 1e-3})).fit(
        x, cf=cf.astype(np.float32), **QUIET)
    o_plain, o_letter = cf_overlap(plain.codes_, cf), cf_overlap(letter.codes_, cf)
    assert o_letter > 2 * o_plain, (o_plain, o_letter)


def test_diversity_regulariser_raises_level1_usage():
    x, _ = planted(n_clusters=4, per=100, dim=32, spread=0.3, seed=3)
    base = dict(hidden=(64,), code_dim=8, n_levels=2, codebook_size=32, epochs=300, log_every=1000,
                learning_rate=3e-3, device="cpu", reseed_dead=False, kmeans_init=False, recluster_every=10)
    plain = RQVAETokenizer(RQVAEConfig(**base)).fit(x, **QUIET)
    div = RQVAETokenizer(RQVAEConfig(**base, div_weight=1.0)).fit(x, **QUIET)
    u_plain = len(np.unique(plain.codes_[:, 0]))
    u_div = len(np.unique(div.codes_[:, 0]))
    assert u_div > u_plain, (u_plain, u_div)


def test_opq_deterministic_and_cold_start():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 48)).astype(np.float32)
    cfg = OPQConfig(n_levels=8, codebook_size=16)
    a = OPQTokenizer(cfg).fit(x[:500], **QUIET)
    b = OPQTokenizer(cfg).fit(x[:500], **QUIET)
    assert (a.codes_ == b.codes_).all() and a.codes_.shape == (500, 8) and a.codes_.max() < 16
    new = a.encode(x[500:])  # items never seen in fitting
    assert new.shape == (100, 8) and (new == b.encode(x[500:])).all()
    pq = OPQTokenizer(OPQConfig(n_levels=8, codebook_size=16, rotate=False)).fit(x[:500], **QUIET)
    assert a.reconstruction_mse_ <= pq.reconstruction_mse_ * 1.05


def test_cli_tokenize_and_bad_inputs(syn_dir, tmp_path, cli):
    code, _, err = cli("embed", syn_dir, "--out", tmp_path / "emb", "--dim", "32")
    assert code == 0, err
    code, _, err = cli("tokenize", syn_dir, "--method", "rqkmeans", "--embeddings", tmp_path / "emb",
                       "--out", tmp_path / "tok", "--codebook-size", "16")
    assert code == 0, err
    rep = json.loads((tmp_path / "tok" / "report.json").read_text())
    for key in ("levels", "codebook_size", "usage_per_level", "collision_rate_before", "collision_rate_after",
                "cf_overlap", "reconstruction_mse"):
        assert key in rep
    assert rep["collision_rate_after"] == 0 and (tmp_path / "tok" / "level1_frequency.png").exists()

    def bad(*args, expect):
        code, _, err = cli("tokenize", syn_dir, "--out", tmp_path / "bad", *args)
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "bad").exists()

    bad("--method", "nope", "--embeddings", tmp_path / "emb", expect="unknown tokenizer method")
    bad("--method", "rqkmeans", "--embeddings", tmp_path / "emb", "--codebook-size", "4096", expect="larger than the catalog")
    emb = np.load(tmp_path / "emb" / "item_emb.npy")
    (tmp_path / "nan").mkdir()
    e2 = emb.copy()
    e2[5, 3] = np.nan
    np.save(tmp_path / "nan" / "item_emb.npy", e2)
    bad("--method", "rqkmeans", "--embeddings", tmp_path / "nan", expect="row 5 holds NaN")
    (tmp_path / "short").mkdir()
    np.save(tmp_path / "short" / "item_emb.npy", emb[:-3])
    bad("--method", "rqkmeans", "--embeddings", tmp_path / "short", expect="dataset has")
    (tmp_path / "cf").mkdir()
    np.save(tmp_path / "cf" / "item_emb.npy", np.ones((emb.shape[0], 16), np.float32))
    bad("--method", "letter", "--embeddings", tmp_path / "emb", "--cf", tmp_path / "cf", "--codebook-size", "16",
        "--epochs", "2", expect="code dim is 32")
    bad("--method", "letter", "--embeddings", tmp_path / "emb", expect="needs --cf")
