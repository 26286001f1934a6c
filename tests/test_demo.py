import json

import pytest


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, cli):
    code, out, err = cli("demo", "--quick", "--out", tmp_path / "d")
    assert code == 0, err
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert set(res["test"]) == {"tiger", "sasrec"}
    assert (tmp_path / "d" / "report.md").exists() and (tmp_path / "d" / "training_curves.png").exists()
    top = json.loads((tmp_path / "d" / "tiger" / "metrics.json").read_text())["test"]
    assert 0 < top["recall@20"] <= 1
    # the report and the output say how each model's training ended (a cut run is not the model's level)
    m = json.loads((tmp_path / "d" / "tiger" / "metrics.json").read_text())
    report = (tmp_path / "d" / "report.md").read_text()
    assert "| tiger | " in report and res["training"]["tiger"].startswith(
        "early stop" if m["stopped"] == "patience" else "cut by its epoch budget")
    assert f"tiger: {res['training']['tiger']}" in err
    # LETTER's ranking experiment (SASRec with the quantized item embeddings) is in the tokens report
    check = json.loads((tmp_path / "d" / "tokens" / "report.json").read_text())["ranking_check"]
    assert 0 < check["recall@10"] <= 1
    code, out, err = cli("recommend", tmp_path / "d" / "tiger", "--history", "nope")
    assert code == 2 and "unknown item" in err
    code, out, err = cli("recommend", tmp_path / "d" / "tiger")
    assert code == 2 and "empty history" in err
    # the same pipeline from a config file with an [lcrec] section: the cached stages are reused, the LC-Rec
    # generator trains on the same tokens and joins the report
    import yaml

    from sidrec.pipeline import demo_config

    cfg = {**demo_config(quick=True), "lcrec": {"model": "tiny-llama", "epochs": 2, "batch_size": 128, "hidden_size": 64,
                                                "num_hidden_layers": 2}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = cli("run", tmp_path / "p.yaml", "--out", tmp_path / "d")
    assert code == 0, err
    assert "stage tiger: cached" in out + err and "stage lcrec: " in out + err and "stage lcrec: cached" not in out + err
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert set(res["test"]) == {"tiger", "sasrec", "lcrec"} and "| lcrec |" in (tmp_path / "d" / "report.md").read_text()
    code, out, err = cli("recommend", tmp_path / "d" / "lcrec", "--history", "i1")
    assert code == 0, err
