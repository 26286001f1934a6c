import json


def test_quick_demo_end_to_end(tmp_path, cli):
    code, out, err = cli("demo", "--quick", "--out", tmp_path / "d")
    assert code == 0, err
    res = json.loads((tmp_path / "d" / "results.json").read_text())
    assert set(res["test"]) == {"tiger", "sasrec"}
    assert (tmp_path / "d" / "report.md").exists() and (tmp_path / "d" / "training_curves.png").exists()
    top = json.loads((tmp_path / "d" / "tiger" / "metrics.json").read_text())["test"]
    assert 0 < top["recall@20"] <= 1
    code, out, err = cli("recommend", tmp_path / "d" / "tiger", "--history", "nope")
    assert code == 2 and "unknown item" in err
    code, out, err = cli("recommend", tmp_path / "d" / "tiger")
    assert code == 2 and "empty history" in err
