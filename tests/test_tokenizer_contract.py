"""The one tokenizer contract, checked the same way for every method: fit -> save -> load -> encode."""

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.tokenizers.collisions import append_position, collision_stats, extend_ids
from sidrec.tokenizers.registry import load_tokenizer, tokenizer_for
from sidrec.tokenizers.rqvae import make_config

QUIET = dict(log=lambda s: None)


def planted(n_clusters=8, per=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim)) * 3
    labels = np.repeat(np.arange(n_clusters), per)
    return (centers[labels] + 0.05 * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


SMALL = dict(hidden=(32,), code_dim=8, n_levels=2, codebook_size=8, epochs=60, log_every=1000, device="cpu",
             min_epochs=1000)
CONFIGS = {
    "rqvae": lambda: make_config("tiger", **SMALL),
    "letter": lambda: make_config("letter", **SMALL),
    "rqkmeans": lambda: tokenizer_for("rqkmeans")[1].__class__(n_levels=2, codebook_size=8),
    "opq": lambda: tokenizer_for("opq")[1].__class__(n_levels=4, codebook_size=8),
}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_fit_save_load_encode(method, tmp_path):
    x, labels = planted()
    cls, _ = tokenizer_for(method)
    tok = cls(CONFIGS[method]())
    cf = np.random.default_rng(1).normal(size=(len(x), 8)).astype(np.float32)
    inputs = dict(cf=cf if "cf" in tok.needs else None, train_mask=np.ones(len(x), bool),
                  item_ids=[str(i) for i in range(len(x))])
    assert tok.fit(x, **inputs, **QUIET) is tok
    unique = getattr(tok.cfg, "collision", "none") != "none"  # OPQ (VQ-Rec) keeps shared codes
    assert tok.codes_.shape[0] == len(x) and (collision_stats(tok.sids_)["rate"] == 0.0 or not unique)
    tok.save(tmp_path / "tok", inputs["item_ids"])
    back = load_tokenizer(tmp_path / "tok")
    assert type(back) is cls and back.method == method
    assert np.array_equal(back.sids_, tok.sids_) and np.array_equal(back.codes_, tok.codes_)
    # encode: the fitted catalog maps to its own codes; unseen items near a planted cluster land in its codes
    assert np.array_equal(back.encode(x), tok.codes_)
    rng = np.random.default_rng(2)
    pick = rng.choice(len(x), 20, replace=False)
    new = x[pick] + 0.01 * rng.normal(size=(20, x.shape[1])).astype(np.float32)
    enc = back.encode(new)
    assert enc.shape == (20, tok.codes_.shape[1])
    assert (enc[:, 0] == tok.codes_[pick, 0]).mean() >= 0.9
    if unique:
        ids = back.new_ids(enc)
        assert collision_stats(np.vstack([tok.sids_, ids]))["rate"] == 0.0  # unique next to the catalog
    else:
        with pytest.raises(SidrecError, match="collision handling"):
            back.new_ids(enc)
    with pytest.raises(SidrecError, match="-d"):
        back.encode(np.zeros((2, x.shape[1] + 1), np.float32))


def test_published_ids_load_but_cannot_encode(tmp_path):
    import json

    index = {str(i): [f"<a_{i % 3}>", f"<b_{i % 5}>"] for i in range(30)}
    (tmp_path / "x.index.json").write_text(json.dumps(index))
    cls, default = tokenizer_for("published")
    tok = cls(default.__class__(index=str(tmp_path / "x.index.json"))).fit(item_ids=list(index), **QUIET)
    tok.save(tmp_path / "tok", list(index))
    back = load_tokenizer(tmp_path / "tok")
    assert np.array_equal(back.sids_, tok.sids_) and back.level_sizes == tok.level_sizes
    with pytest.raises(SidrecError, match="cannot encode new items"):
        back.encode(np.zeros((1, 4), np.float32))
    with pytest.raises(SidrecError, match="item_ids"):
        cls(default).fit(np.zeros((3, 4), np.float32), **QUIET)


def test_new_ids_continue_each_prefix_after_the_catalog():
    codes = np.array([[0, 0], [0, 0], [1, 2], [3, 3]])
    sids = append_position(codes)  # suffixes 0, 1 for prefix (0, 0)
    new = np.array([[0, 0], [5, 5], [0, 0], [1, 2], [5, 5]])
    ids = extend_ids(sids, new)
    assert ids.tolist() == [[0, 0, 2], [5, 5, 0], [0, 0, 3], [1, 2, 1], [5, 5, 1]]
