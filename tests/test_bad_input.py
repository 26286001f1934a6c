"""Every user mistake: one line naming the file (and line) and the problem, exit code 2, nothing half-written."""

import gzip
import json



def _check(cli, tmp_path, source, files, expect, *extra):
    out = tmp_path / "out"
    args = ["data", "prepare", source, "--out", out]
    for f in files:
        args += ["--input", f]
    code, so, se = cli(*args, *extra)
    assert code == 2, se
    lines = [line for line in se.strip().splitlines() if line.strip()]
    assert len(lines) == 1, se
    assert "Traceback" not in se and expect in se, se
    assert not out.exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())
    return se


def test_truncated_gzip(cli, tmp_path):
    p = tmp_path / "Beauty.txt.gz"
    data = gzip.compress(b"".join(f"{u} 1 2 3 4 5\n".encode() for u in range(50)))
    p.write_bytes(data[: len(data) // 2])
    _check(cli, tmp_path, "s3rec", [p], "truncated")


def test_not_json_line(cli, tmp_path):
    p = tmp_path / "reviews.json"
    p.write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n{oops\n')
    se = _check(cli, tmp_path, "amazon2018", [p], "not JSON")
    assert "reviews.json:2" in se


def test_not_a_literal(cli, tmp_path):
    (tmp_path / "reviews.json").write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n')
    m = tmp_path / "meta_x.json"
    m.write_text("{'asin': 'a', 'title': 'x'}\n{'asin': 'b', 'title': \n")
    se = _check(cli, tmp_path, "amazon2014", [tmp_path / "reviews.json", m], "not a Python literal")
    assert "meta_x.json:2" in se


def test_missing_field_and_column(cli, tmp_path):
    p = tmp_path / "reviews.json"
    p.write_text('{"reviewerID": "u", "unixReviewTime": 1}\n')
    _check(cli, tmp_path, "amazon2018", [p], "reviews.json:1: record lacks field(s) ['asin']")
    c = tmp_path / "t.csv"
    c.write_text("user,thing\n1,2\n")
    _check(cli, tmp_path, "csv", [c], "missing column 'item'")


def test_non_numeric_timestamp(cli, tmp_path):
    p = tmp_path / "reviews.json"
    p.write_text('{"reviewerID": "u", "asin": "a", "unixReviewTime": "yesterday"}\n')
    _check(cli, tmp_path, "amazon2018", [p], "not a numeric timestamp")
    r = tmp_path / "x.inter"
    r.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\tlater\n")
    _check(cli, tmp_path, "recbole", [r], "x.inter:3")


def test_empty_and_missing_file(cli, tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("")
    _check(cli, tmp_path, "s3rec", [p], "empty")
    _check(cli, tmp_path, "s3rec", [tmp_path / "nope.txt"], "file not found")


def test_kcore_leaves_nothing(cli, tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1 1 2 3\n2 4 5 6\n")
    _check(cli, tmp_path, "s3rec", [p], "no interactions left after 5-core")


def test_unknown_source(cli, tmp_path):
    _check(cli, tmp_path, "myspace", [], "unknown source 'myspace'")


def test_bad_predictions_file(cli, tmp_path, syn_dir):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"user": "u1", "items": ["i1"]}) + "\nnot json\n")
    code, _, se = cli("evaluate", "--data", syn_dir, "--predictions", p)
    assert code == 2 and "p.jsonl:2" in se and len(se.strip().splitlines()) == 1
    code, _, se = cli("evaluate", "--data", tmp_path, "--predictions", p)
    assert code == 2 and "not a prepared dataset" in se


def test_torchrun_with_several_processes_is_refused_where_not_distributed(cli, monkeypatch, syn_dir, tmp_path):
    """Commands that do not run distributed would each write the same output: one clear line, exit 2."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, se = cli("evaluate-coldstart", syn_dir, "--out", tmp_path / "run")
    assert code == 2 and "torchrun" in se and "train lcrec|rpg|sasrec|tiger|vqrec" in se and len(se.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    code, _, se = cli("tokenize", syn_dir, "--method", "rqkmeans", "--out", tmp_path / "tok")
    assert code == 2 and "torchrun" in se and "tokenize --method rqvae|letter" in se
    code, _, se = cli("tokenize", syn_dir, "--method", "rqvae", "--out", tmp_path / "tok")  # not under torchrun
    assert code == 2 and "RANK" in se and len(se.strip().splitlines()) == 1
    monkeypatch.setenv("WORLD_SIZE", "1")  # a single-process torchrun is fine
    code, _, _ = cli("train", "--help")
    assert code == 0
