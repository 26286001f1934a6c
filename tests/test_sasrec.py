import json

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.models.sasrec import SASRecConfig
from sidrec.train.loop import TrainConfig
from sidrec.train.sasrec import train_sasrec


def test_sasrec_learns_and_exports(syn_ds, tmp_path):
    m = train_sasrec(syn_ds, tmp_path / "run", SASRecConfig(dim=32, dropout=0.1),
                     TrainConfig(epochs=25, batch_size=64, learning_rate=3e-3, patience=50, seed=0), log=lambda s: None)
    # the synthetic data has a strong complement transition (p=0.5): random would be ~10/150
    assert m["test"]["recall@10"] > 0.3, m["test"]
    emb = np.load(tmp_path / "run" / "item_emb.npy")
    assert emb.shape == (syn_ds.n_items + 1, 32) and emb.dtype == np.float32
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(saved) >= {"validation", "test"} and saved["test"]["split"] == "test"
    assert (tmp_path / "run" / "run.json").exists() and (tmp_path / "run" / "config.json").exists()


def test_resume_equals_unbroken_run(syn_ds, tmp_path):
    cfg = SASRecConfig(dim=16, n_layers=1, dropout=0.2)
    full = train_sasrec(syn_ds, tmp_path / "a", cfg, TrainConfig(epochs=4, batch_size=64, seed=1), log=lambda s: None)
    train_sasrec(syn_ds, tmp_path / "b", cfg, TrainConfig(epochs=2, batch_size=64, seed=1), log=lambda s: None)
    resumed = train_sasrec(syn_ds, tmp_path / "b", cfg, TrainConfig(epochs=4, batch_size=64, seed=1), log=lambda s: None)
    assert resumed["test"]["ndcg@10"] == full["test"]["ndcg@10"]
    assert resumed["validation"]["ndcg@10"] == full["validation"]["ndcg@10"]
    # another model shape is refused in one line and leaves the run as it was (the shared rule of generator runs)
    before = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    with pytest.raises(SidrecError, match="another model"):
        train_sasrec(syn_ds, tmp_path / "b", SASRecConfig(dim=32, n_layers=1, dropout=0.2),
                     TrainConfig(epochs=6, batch_size=64, seed=1), log=lambda s: None)
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == before


def test_bce_option_learns_a_planted_pattern(tmp_path):
    """The sampled-negative BCE loss learns item i -> item i+1 as the full softmax does (30 items: chance R@10 ~0.33)."""
    from conftest import pattern_dataset

    ds = pattern_dataset(tmp_path)
    m = train_sasrec(ds, tmp_path / "c", SASRecConfig(dim=32, n_layers=1, loss="bce", dropout=0.0),
                     TrainConfig(epochs=40, batch_size=64, learning_rate=5e-3, patience=40, seed=0), log=lambda s: None)
    assert m["test"]["recall@10"] > 0.8, m["test"]


def test_cli_train_sasrec_with_config_file(syn_dir, tmp_path, cli):
    cfgf = tmp_path / "c.toml"
    cfgf.write_text("[model]\ndim = 16\n[train]\nepochs = 2\nbatch_size = 128\n")
    code, out, err = cli("train", "sasrec", syn_dir, "--out", tmp_path / "r", "--config", cfgf, "--set", "n_layers=1")
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model"]["dim"] == 16 and cfg["model"]["n_layers"] == 1 and cfg["train"]["epochs"] == 2
    code, out, err = cli("train", "sasrec", syn_dir, "--out", tmp_path / "r2", "--set", "dimm=3")
    assert code == 2 and "unknown setting" in err
