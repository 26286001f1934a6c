"""Item-level pooling of the history's ID tokens (TIGERConfig.item_pooling): a fresh pooled model reads its tokens
unchanged, a trained one differs and still decodes exactly (beam = brute force), and it learns a planted pattern."""

import numpy as np
import torch

from sidrec.decoding.beam import candidate_scores, generate
from sidrec.decoding.trie import build_trie
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from test_tiger import TINY, catalog, planted_run

POOLED = TIGERConfig(**{**TINY.__dict__, "item_pooling": True})


def test_fresh_pooling_is_the_identity_then_decodes_exactly():
    torch.manual_seed(0)
    codes = catalog(n=40)
    pooled = TIGER(POOLED, Vocab([4, 4, 4]), codes).eval()
    plain = TIGER(TINY, Vocab([4, 4, 4]), codes).eval()
    plain.load_state_dict({k: v for k, v in pooled.state_dict().items() if not k.startswith("pool.")})
    hist = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 11]])
    users, target = torch.zeros(3, dtype=torch.long), torch.tensor([4, 6, 12])
    torch.testing.assert_close(pooled.teacher_forced(users, hist, target)[0], plain.teacher_forced(users, hist, target)[0])
    with torch.no_grad():
        pooled.pool.proj.weight.normal_(0, 0.5)
        pooled.pool.query.normal_(0, 1.0)
    assert not torch.allclose(pooled.teacher_forced(users, hist, target)[0], plain.teacher_forced(users, hist, target)[0])
    trie = build_trie(codes, [4, 4, 4])
    items, scores = generate(pooled, users, hist, trie, beam=len(codes), k=5)
    every = torch.arange(1, len(codes) + 1)[None].expand(3, -1)
    best = candidate_scores(pooled, users, hist, every).topk(5, dim=1)
    assert torch.equal(items, best.indices + 1)
    torch.testing.assert_close(scores, best.values, rtol=1e-4, atol=1e-4)


def test_pooled_generator_learns_a_planted_pattern(tmp_path):
    from sidrec.train.loop import TrainConfig
    from sidrec.train.tiger import load_tiger, train_tiger

    ds, _ = planted_run(tmp_path)
    cfg = TIGERConfig(preset="custom", n_layers=2, d_model=64, n_heads=4, d_kv=16, d_ff=128, dropout=0.0,
                      max_history=3, item_pooling=True)
    m = train_tiger(ds, tmp_path / "tok", tmp_path / "run", cfg,
                    TrainConfig(epochs=12, batch_size=64, learning_rate=3e-3, eval_every=4, seed=0),
                    beam=20, ks=(1, 5, 10), log=lambda s: None)
    assert m["test"]["recall@1"] > 0.9, m["test"]
    model = load_tiger(tmp_path / "run")[0]
    assert model.cfg.item_pooling and model.pool.proj.weight.abs().sum() > 0  # the pooling was trained and saved
