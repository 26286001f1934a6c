"""Every source reader on small files the tests write themselves, through the real CLI."""

import gzip
import json
import numpy as np

import pandas as pd
import pytest

from sidrec.data.dataset import load_dataset


def _seq_users(n_users=6, n_items=6, length=6):
    """Users who each touch every item: survives a 5-core."""
    return {f"U{u}": [f"I{(u + k) % n_items}" for k in range(length)] for u in range(n_users)}


def _prep(cli, tmp_path, source, files, *extra):
    out = tmp_path / f"ds-{source}"
    args = ["data", "prepare", source, "--out", out]
    for f in files:
        args += ["--input", f]
    code, so, se = cli(*args, *extra)
    assert code == 0, se
    return load_dataset(out)


def test_s3rec_gz_and_split(cli, tmp_path):
    p = tmp_path / "Beauty.txt.gz"
    with gzip.open(p, "wt") as f:
        for u, items in _seq_users().items():
            f.write(" ".join([u, *items]) + "\n")
    ds = _prep(cli, tmp_path, "s3rec", [p])
    assert (ds.n_users, ds.n_items, len(ds.seq)) == (6, 6, 36)
    _, hist, tgt = ds.eval_inputs("test", 3)
    raw = ds.items["item_id"].to_numpy()
    assert raw[tgt[0] - 1] == "I5" and list(raw[hist[0] - 1]) == ["I2", "I3", "I4"]
    inter = pd.read_parquet(ds.path / "interactions.parquet")
    assert inter["split"].value_counts().to_dict() == {"train": 24, "valid": 6, "test": 6}


def test_kcore_fixed_point_iterates(cli, tmp_path):
    # item X appears 5 times but one of its users has only 4 other interactions -> cascade
    seqs = _seq_users()
    seqs["W"] = ["I0", "I1", "I2", "X"]  # W has 4 interactions: removed, then X drops to 4 -> removed
    for u in list(seqs)[:4]:
        seqs[u] = seqs[u] + ["X"]
    p = tmp_path / "s.txt"
    p.write_text("".join(" ".join([u, *s]) + "\n" for u, s in seqs.items()))
    ds = _prep(cli, tmp_path, "s3rec", [p])
    assert "X" not in set(ds.items["item_id"]) and "W" not in set(ds.users["user_id"])
    assert ds.stats["filtered"]["below 5-core (3 rounds)"] == 4 + 4


def test_letter_with_text_html_and_missing_text(cli, tmp_path):
    inter = {str(u): [(u + k) % 6 for k in range(6)] for u in range(6)}
    items = {str(i): {"title": f"Item &amp; {i}  <b>bold</b>", "description": "d"} for i in range(5)}  # 5 lacks text
    (tmp_path / "X.inter.json").write_text(json.dumps(inter))
    (tmp_path / "X.item.json").write_text(json.dumps(items))
    ds = _prep(cli, tmp_path, "letter", [tmp_path / "X.inter.json", tmp_path / "X.item.json"])
    assert ds.stats["items_without_text"] == 1 and ds.stats["items_with_text"] == 5
    assert ds.items.loc[0, "text"] == "Item & 0 bold. d"
    assert list(ds.items["item_id"]) == [str(i) for i in range(6)]  # numeric ids keep numeric order


def test_unisrec_rebuilds_sequences(cli, tmp_path):
    hdr = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    seqs = {str(u): [str((u + k) % 6) for k in range(6)] for u in range(6)}
    (tmp_path / "S.train.inter").write_text(hdr + "".join(
        f"{u}\t{' '.join(s[:k])}\t{s[k]}\n" for u, s in seqs.items() for k in range(1, 4)))
    (tmp_path / "S.valid.inter").write_text(hdr + "".join(f"{u}\t{' '.join(s[:4])}\t{s[4]}\n" for u, s in seqs.items()))
    (tmp_path / "S.test.inter").write_text(hdr + "".join(f"{u}\t{' '.join(s[:5])}\t{s[5]}\n" for u, s in seqs.items()))
    (tmp_path / "S.item2index").write_text("".join(f"ASIN{i}\t{i}\n" for i in range(6)))
    (tmp_path / "S.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"ASIN{i}\tthing {i}\n" for i in range(6)))
    ds = _prep(cli, tmp_path, "unisrec", [tmp_path / f for f in
                                          ("S.train.inter", "S.valid.inter", "S.test.inter", "S.item2index", "S.text")])
    assert len(ds.seq) == 36 and ds.items.loc[3, "text"] == "thing 3"


def test_recbole_and_movielens(cli, tmp_path):
    rows = [(u, (u + k) % 6, 1000 * k + u) for u in range(6) for k in range(6)]
    (tmp_path / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                       + "".join(f"{u}\t{i}\t5\t{t}\n" for u, i, t in rows))
    (tmp_path / "ml.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                      + "".join(f"{i}\tMovie {i}\tDrama\n" for i in range(6)))
    ds = _prep(cli, tmp_path, "recbole", [tmp_path / "ml.inter", tmp_path / "ml.item"])
    assert ds.n_items == 6 and ds.items.loc[0, "text"] == "Movie 0. Drama"
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t4\t{t}\n" for u, i, t in rows))
    (tmp_path / "u.item").write_text("".join(f"{i}|Film {i} (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                                             for i in range(6)))
    ds = _prep(cli, tmp_path, "movielens", [tmp_path / "u.data", tmp_path / "u.item"])
    assert ds.items.loc[0, "text"].startswith("Film 0 (1995). Action")
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::4::{t}\n" for u, i, t in rows))
    (tmp_path / "movies.dat").write_text("".join(f"{i}::Film {i}::Comedy|Drama\n" for i in range(6)))
    ds = _prep(cli, tmp_path, "movielens", [tmp_path / "ratings.dat", tmp_path / "movies.dat"])
    assert ds.items.loc[1, "categories"] == "Comedy, Drama"


@pytest.mark.parametrize("release", ["amazon2014", "amazon2018", "amazon2023"])
def test_amazon_releases(cli, tmp_path, release):
    uk, ik, tk = ("user_id", "parent_asin", "timestamp") if release == "amazon2023" else ("reviewerID", "asin", "unixReviewTime")
    rev = [{uk: f"U{u}", ik: f"A{(u + k) % 6}", tk: 100 * k} for u in range(6) for k in range(6)]
    rev.append(dict(rev[0]))  # a duplicate review: dropped and counted
    with gzip.open(tmp_path / "reviews.json.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rev)
    if release == "amazon2014":  # Python literal lines, single quotes
        meta = "".join(str({"asin": f"A{i}", "title": f"T{i}", "categories": [["Beauty", "Skin"]]}) + "\n" for i in range(6))
    else:
        cat = "category" if release == "amazon2018" else "categories"
        meta = "".join(json.dumps({ik: f"A{i}", "title": f"T{i}", cat: ["Beauty", "Skin"], "description": ["x"]}) + "\n"
                       for i in range(6))
    (tmp_path / "meta_Beauty.json").write_text(meta)
    ds = _prep(cli, tmp_path, release, [tmp_path / "reviews.json.gz", tmp_path / "meta_Beauty.json"])
    assert ds.stats["filtered"]["duplicate (user, item) rows"] == 1
    assert ds.items.loc[0, "text"].startswith("T0. Beauty, Skin")


def test_yelp_online_retail_csv_parquet(cli, tmp_path):
    biz = [{"business_id": f"B{i}", "name": f"Cafe {i}", "categories": "Food, Coffee"} for i in range(6)]
    rev = [{"user_id": f"U{u}", "business_id": f"B{(u + k) % 6}", "date": f"2019-01-0{k + 1} 10:00:00"}
           for u in range(6) for k in range(6)]
    (tmp_path / "business.json").write_text("".join(json.dumps(b) + "\n" for b in biz))
    (tmp_path / "review.json").write_text("".join(json.dumps(r) + "\n" for r in rev))
    ds = _prep(cli, tmp_path, "yelp", [tmp_path / "business.json", tmp_path / "review.json"])
    assert ds.items.loc[0, "text"] == "Cafe 0. Food, Coffee"

    rows = [{"InvoiceNo": f"{536000 + u * 10 + k}", "StockCode": f"S{(u + k) % 6}", "Description": f"MUG {(u + k) % 6}",
             "Quantity": 1, "InvoiceDate": f"2011-01-0{k + 1} 10:00", "UnitPrice": 1.0, "CustomerID": 12000.0 + u,
             "Country": "UK"} for u in range(6) for k in range(6)]
    rows.append({**rows[0], "InvoiceNo": "C536999"})
    rows.append({**rows[0], "CustomerID": None})
    pd.DataFrame(rows).to_csv(tmp_path / "retail.csv", index=False)
    ds = _prep(cli, tmp_path, "online-retail", [tmp_path / "retail.csv"])
    assert ds.stats["filtered"]["cancelled invoice rows"] == 1
    assert ds.stats["filtered"]["rows without CustomerID"] == 1
    assert ds.users.loc[0, "user_id"] == "12000" and ds.items.loc[0, "text"] == "MUG 0"

    df = pd.DataFrame([{"uid": u, "iid": f"x{(u + k) % 6}", "ts": k} for u in range(6) for k in range(6)])
    df.to_csv(tmp_path / "t.csv", index=False)
    ds = _prep(cli, tmp_path, "csv", [tmp_path / "t.csv"], "--columns", "user=uid,item=iid,time=ts")
    assert len(ds.seq) == 36
    df.to_parquet(tmp_path / "t.parquet")
    ds = _prep(cli, tmp_path, "parquet", [tmp_path / "t.parquet"], "--columns", "user=uid,item=iid,time=ts")
    assert ds.n_items == 6


def test_synthetic_is_seeded(cli, tmp_path):
    a = _prep(cli, tmp_path / "a", "synthetic", [], "--synthetic", "n_users=100,n_items=50", "--seed", "7")
    b = _prep(cli, tmp_path / "b", "synthetic", [], "--synthetic", "n_users=100,n_items=50", "--seed", "7")
    assert a.fingerprint == b.fingerprint and (a.seq == b.seq).all()


def test_s3rec_with_item_text_keyed_from_zero(cli, tmp_path):
    """TransRec's derived item files are keyed by S3Rec id - 1: matched with a shift of one, reported."""
    p = tmp_path / "Toys.txt"
    p.write_text("".join(" ".join([u, *[str(int(i[1:]) + 1) for i in s]]) + "\n" for u, s in _seq_users().items()))
    items = {str(i): {"title": f"toy {i + 1}", "categories": [["Toys", "Cars"]]} for i in range(6)}
    (tmp_path / "Toys.item.json").write_text(json.dumps(items))
    ds = _prep(cli, tmp_path, "s3rec", [p, tmp_path / "Toys.item.json"])
    assert ds.stats["items_with_text"] == 6
    assert ds.items.set_index("item_id").loc["3", "title"] == "toy 3"  # S3Rec item 3 = key "2"
    assert any("shifted by +1" in k for k in ds.stats["filtered"])
    (tmp_path / "Other.item.json").write_text(json.dumps({f"x{i}": {"title": "t"} for i in range(6)}))
    code, _, err = cli("data", "prepare", "s3rec", "--input", p, "--input", tmp_path / "Other.item.json",
                       "--out", tmp_path / "bad")
    assert code == 2 and "Other.item.json" in err and "match" in err


@pytest.mark.parametrize("sep", [",", "\t", ";"])
def test_csv_delimiters_and_only_needed_columns(tmp_path, sep):
    """The delimiter is sniffed, only the mapped columns are read (an unused one may hold anything), and an id
    that reads like a missing value ("NA") stays an id."""
    from sidrec.data.sources import read_source

    rows = [sep.join(["user_id", "item_id", "ts", "junk"])]
    for u in range(4):
        for k in range(3):
            rows.append(sep.join([f"u{u}", "NA" if k == 0 else f"i{k}", str(10 * u + k), '"x, y; z"']))
    p = tmp_path / "t.csv"
    p.write_text("\n".join(rows) + "\n")
    raw = read_source("csv", [p], columns={"user": "user_id", "item": "item_id", "time": "ts"})
    assert list(raw.interactions.columns) == ["user", "item", "time"] and len(raw.interactions) == 12
    assert (raw.interactions["item"] == "NA").sum() == 4
    assert raw.interactions["time"].tolist()[:3] == [0.0, 1.0, 2.0]


def test_csv_ragged_row_and_missing_times(cli, tmp_path):
    """A row with more fields than the header is an error naming the line; a missing time (numeric or date
    column) is counted as filtered, not misread."""
    (tmp_path / "bad.csv").write_text("user,item,time\nu1,i1,1\nu1,i2,2,extra\n")
    code, _, err = cli("data", "prepare", "csv", "--input", tmp_path / "bad.csv", "--out", tmp_path / "o")
    assert code == 2 and "line 3" in err and len(err.strip().splitlines()) == 1
    for times in (["1", "2", "3", ""], ["2020-01-01", "2020-01-02", "2020-01-03", ""]):
        rows = [f"u1,i{k},{t}" for k, t in enumerate(times[:3])] + [f"u2,i0,{times[3]}"]
        (tmp_path / "m.csv").write_text("user,item,time\n" + "\n".join(rows) + "\n")
        code, out, err = cli("data", "prepare", "csv", "--input", tmp_path / "m.csv", "--min-count", "1",
                             "--out", tmp_path / "m")
        assert code == 0, err
        stats = json.loads((tmp_path / "m" / "stats.json").read_text())
        assert stats["filtered"]["rows with missing user/item/time"] == 1


def test_csv_read_in_chunks_equals_one_read(tmp_path, monkeypatch):
    """A csv read in many small chunks (ids dictionary-encoded, times parsed per chunk) prepares the same
    dataset as one read; a ragged row or a bad time in a later chunk names its line in the file."""
    import pandas as pd

    from sidrec.data import io
    from sidrec.data.prepare import PrepareConfig, prepare
    from sidrec.data.sources import read_source
    from sidrec.errors import SidrecError

    rng = np.random.default_rng(0)
    n = 400
    users = rng.integers(0, 30, n)
    items = rng.integers(0, 25, n)
    rows = [f"u{u};item-{i};{t}" for t, (u, i) in enumerate(zip(users, items))]
    rows[17] = f"u{users[17]};;17"  # a missing item: counted as filtered either way
    (tmp_path / "x.csv").write_text("who;what;when\n" + "\n".join(rows) + "\n")
    cols = {"user": "who", "item": "what", "time": "when"}
    outs = []
    for chunk in (10**6, 7):
        monkeypatch.setattr(io, "CSV_CHUNK_ROWS", chunk)
        raw = read_source("csv", [tmp_path / "x.csv"], columns=cols)
        assert isinstance(raw.interactions["user"].dtype, pd.CategoricalDtype)
        stats = prepare(raw, tmp_path / f"o{chunk}", PrepareConfig(min_count=2), source="csv")
        outs.append((stats, [pd.read_parquet(tmp_path / f"o{chunk}" / f) for f in
                             ("interactions.parquet", "items.parquet", "users.parquet")]))
    assert outs[0][0]["fingerprint"] == outs[1][0]["fingerprint"]
    assert outs[0][0]["filtered"] == outs[1][0]["filtered"] and outs[0][0]["filtered"]["rows with missing user/item/time"] == 1
    for a, b in zip(outs[0][1], outs[1][1]):
        pd.testing.assert_frame_equal(a, b)
    monkeypatch.setattr(io, "CSV_CHUNK_ROWS", 7)
    bad = rows.copy()
    bad[250] = "u1;item-1;yesterday-ish"
    (tmp_path / "t.csv").write_text("who;what;when\n" + "\n".join(bad) + "\n")
    with pytest.raises(SidrecError, match=r"t\.csv:252: when='yesterday-ish'"):
        read_source("csv", [tmp_path / "t.csv"], columns=cols)
    bad[250] = "u1;item-1;5;extra"
    (tmp_path / "r.csv").write_text("who;what;when\n" + "\n".join(bad) + "\n")
    with pytest.raises(SidrecError, match="line 252"):
        read_source("csv", [tmp_path / "r.csv"], columns=cols)
