"""The LC-Rec-style causal-LM generator through the same contract as TIGER."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from sidrec.decoding.beam import generate  # noqa: E402
from sidrec.decoding.trie import Trie  # noqa: E402
from sidrec.models.lcrec import LCRec, LCRecConfig  # noqa: E402
from sidrec.models.tiger import Vocab  # noqa: E402


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2"])
def test_cached_beam_search_equals_brute_force(arch):
    """Constrained beam search over the KV cache (left-padded histories) = ranking every item by its
    teacher-forced log-probability."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    codes = codes[rng.permutation(50)]
    model = LCRec(LCRecConfig(model=arch, max_history=5, dropout=0.0, hidden_size=64, num_hidden_layers=2),
                  Vocab([4, 4, 4]), codes).eval()
    hist = torch.randint(1, 51, (4, 5))
    hist[0, :3] = 0
    users = torch.arange(4)
    with torch.no_grad():
        items, scores = generate(model, users, hist, Trie(codes, [4, 4, 4]), beam=50, k=10)
        for b in range(4):
            logits, labels = model.teacher_forced(users[b:b + 1].expand(50), hist[b:b + 1].expand(50, -1),
                                                  torch.arange(1, 51))
            lp = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0].sum(1)
            top = torch.topk(lp, 10)
            assert items[b].tolist() == (top.indices + 1).tolist()
            assert torch.allclose(scores[b], top.values, atol=1e-4)


def test_learns_planted_pattern_and_serves(tmp_path, cli):
    """Item i is followed by item i+1: the causal LM finds it; the run serves through the generator registry."""
    import pandas as pd

    from sidrec.data.dataset import load_dataset
    from sidrec.data.prepare import PrepareConfig, prepare
    from sidrec.data.schema import RawData
    from sidrec.serving.recommender import load_recommender
    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer

    rng = np.random.default_rng(0)
    rows = []
    for u in range(300):
        start, length = rng.integers(40), rng.integers(6, 10)
        rows += [(f"u{u}", f"i{(start + k) % 40}", float(k)) for k in range(length)]
    prepare(RawData(pd.DataFrame(rows, columns=["user", "item", "time"])), tmp_path / "ds", PrepareConfig(min_count=1))
    ds = load_dataset(tmp_path / "ds")
    tok = RQKMeansTokenizer(RQKMeansConfig(n_levels=2, codebook_size=8)).fit(
        rng.normal(size=(ds.n_items, 16)).astype(np.float32), log=lambda s: None)
    tok.save(tmp_path / "tok")
    code, out, err = cli("train", "lcrec", tmp_path / "ds", "--tokens", tmp_path / "tok", "--out", tmp_path / "run",
                         "--model", "tiny-llama", "--epochs", "15", "--batch-size", "64", "--lr", "3e-3",
                         "--max-history", "3", "--seed", "0", "--device", "cpu")
    assert code == 0, err
    import json

    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["model"] == "lcrec" and m["test"]["recall@5"] > 0.9, m["test"]
    rec = load_recommender(tmp_path / "run")
    assert rec.kind == "lcrec"
    assert rec.recommend(["i3", "i4"], k=3)[0]["item"] == "i5"
