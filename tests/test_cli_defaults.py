"""Defaults in view: every training option's default in --help, `sidrec config show` prints the resolved config (and
`--config` reads it back), a run prints the config it will use, a report says how its training ended."""

from __future__ import annotations

import re

from sidrec.train.config import LCREC_TRAIN_DEFAULTS, SASREC_TRAIN_DEFAULTS, TRAIN_PRESETS


def _help(cli, *cmd) -> str:
    code, out, err = cli(*cmd, "--help")
    assert code == 0
    return re.sub(r"[\s│]+", " ", out)


def test_help_shows_every_training_default(cli):
    tiger = _help(cli, "train", "tiger")
    for key, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"), ("learning_rate", "--lr"),
                      ("patience", "--patience")):
        per = ", ".join(f"{p} {d[key]}" for p, d in TRAIN_PRESETS.items())
        assert f"(default: by preset: {per})" in tiger, key
    assert "results tables use letter" in tiger
    sas = _help(cli, "train", "sasrec")
    assert f"epochs (default: {SASREC_TRAIN_DEFAULTS['epochs']})" in sas and "(default: 0)" in sas  # seed
    lc = _help(cli, "train", "lcrec")
    assert f"(default: {LCREC_TRAIN_DEFAULTS['patience']})" in lc and "(default: loss)" in lc


def test_config_show_prints_what_a_run_uses_and_reads_back(cli, tmp_path):
    code, out, err = cli("config", "show", "tiger", "--preset", "letter", "--set", "epochs=7")
    assert code == 0, err
    assert 'preset = "letter"' in out and "batch_size = 1024" in out and "learning_rate = 0.0005" in out
    assert "epochs = 7" in out
    f = tmp_path / "c.toml"
    f.write_text(out)
    code, again, err = cli("config", "show", "tiger", "--preset", "letter", "--config", f)
    assert code == 0 and again == out  # a shown config is a config file that gives itself back
    code, out, err = cli("config", "show", "letter", "--set", "cf_weight=0.02")
    assert code == 0 and "cf_weight = 0.02" in out
    code, out, err = cli("config", "show", "gru")
    assert code == 2 and "choose one of" in err


def test_a_run_prints_its_config(cli, tiger_run, tmp_path):
    from pathlib import Path

    syn = Path(tiger_run["ds"].path)
    code, out, err = cli("train", "sasrec", syn, "--out", tmp_path / "s", "--epochs", "1", "--dim", "16")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("config model:"))
    assert "dim=16" in line and "epochs=1" in line and "learning_rate=0.001" in line


def test_report_says_how_training_ended():
    from sidrec.report import training_status

    assert training_status({"epochs_run": 15, "best_epoch": 15, "stopped": "epochs"}) == \
        "cut by its epoch budget at epoch 15 (best 15): still improving"
    assert training_status({"epochs_run": 40, "best_epoch": 30, "stopped": "patience"}) == \
        "early stop at epoch 40 (best 30)"
    assert training_status({"epochs_run": 60, "best_epoch": 20, "stopped": "epochs"}) == \
        "cut by its epoch budget at epoch 60 (best 20)"
