"""One precedence rule: defaults < preset < config file < explicit options / --set; API == CLI."""

import json

import pytest

from sidrec.config import from_dict, to_dict
from sidrec.errors import SidrecError
from sidrec.models.tiger import PRESETS, TIGERConfig
from sidrec.train.tiger import TRAIN_PRESETS, tiger_train_config


def test_explicit_values_beat_the_preset():
    c = TIGERConfig(preset="strong", d_model=256, n_layers=8)
    assert (c.d_model, c.n_layers) == (256, 8)
    assert (c.n_heads, c.dropout) == (PRESETS["strong"]["n_heads"], PRESETS["strong"]["dropout"])
    assert TIGERConfig(preset="small").d_model == PRESETS["small"]["d_model"]
    assert TIGERConfig().n_layers == PRESETS["tiger"]["n_layers"]
    with pytest.raises(SidrecError, match="unknown TIGER preset"):
        TIGERConfig(preset="huge")


def test_config_round_trip():
    c = TIGERConfig(preset="strong", d_model=256, max_history=7, temperature=0.7)
    assert from_dict(TIGERConfig, json.loads(json.dumps(to_dict(c)))) == c
    t = tiger_train_config("strong", batch_size=1024, learning_rate=None)
    assert t.batch_size == 1024 and t.learning_rate == TRAIN_PRESETS["strong"]["learning_rate"]


def test_cli_set_and_options_reach_the_run(cli, tmp_path, syn_dir):
    """`--set d_model=48` with a preset, and --epochs over the preset's: both end in the run's config."""
    import numpy as np

    from sidrec.data.dataset import load_dataset
    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer

    ds = load_dataset(syn_dir)
    tok = RQKMeansTokenizer(RQKMeansConfig(n_levels=2, codebook_size=8)).fit(
        np.random.default_rng(0).normal(size=(ds.n_items, 8)).astype(np.float32), log=lambda s: None)
    tok.save(tmp_path / "tok")
    code, out, err = cli("train", "tiger", syn_dir, "--tokens", tmp_path / "tok", "--out", tmp_path / "run",
                         "--preset", "small", "--set", "d_model=48", "--set", "n_heads=2", "--epochs", "1",
                         "--set", "epochs=5", "--valid-users", "50", "--device", "cpu")
    assert code == 0, err
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    m, t = conf["model"], conf["train"]
    assert (m["d_model"], m["n_heads"], m["n_layers"]) == (48, 2, PRESETS["small"]["n_layers"])
    assert t["epochs"] == 1  # an explicit option beats --set, which beats the preset
    assert m["max_history"] == ds.stats["config"]["max_history"]  # dataset-derived, as in the API


def test_one_name_per_concept_and_old_run_configs_still_load():
    """max_history / n_levels / codebook_size everywhere; keys written by sidrec <= 0.2 map to them."""
    import dataclasses

    from sidrec.config import from_dict
    from sidrec.models.sasrec import SASRecConfig
    from sidrec.models.tiger import TIGERConfig
    from sidrec.models.vqrec import VQRecConfig
    from sidrec.tokenizers.opq import OPQConfig
    from sidrec.tokenizers.rqvae import RQVAEConfig

    for cls in (SASRecConfig, VQRecConfig, TIGERConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert "max_history" in names and "max_len" not in names
    for cls in (VQRecConfig, OPQConfig, RQVAEConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert {"n_levels", "codebook_size"} <= names and not names & {"n_codes", "code_size"}
    assert from_dict(SASRecConfig, {"max_len": 30}).max_history == 30
    old = from_dict(VQRecConfig, {"n_codes": 8, "code_size": 64, "max_len": 40})
    assert (old.n_levels, old.codebook_size, old.max_history) == (8, 64, 40)


def test_training_defaults_are_typed_read_only_deltas():
    import pytest

    from sidrec.train.config import LCREC_TRAIN_DEFAULTS, TRAIN_PRESETS, TrainConfig, delta

    assert TRAIN_PRESETS["letter"]["batch_size"] == 1024 and LCREC_TRAIN_DEFAULTS["select_metric"] == "loss"
    with pytest.raises(TypeError):
        TRAIN_PRESETS["letter"]["batch_size"] = 64  # read-only: one place per default
    with pytest.raises(TypeError, match="batch_sise"):
        delta(batch_sise=64)
    with pytest.raises(TypeError, match="schedule"):
        delta(schedule="cosin")
    with pytest.raises(TypeError, match="epochs"):
        delta(epochs=2.5)
    assert dict(delta(learning_rate=1, compile=None)) == {"learning_rate": 1, "compile": None}
    assert TrainConfig(**TRAIN_PRESETS["strong"]).weight_decay == 0.035
