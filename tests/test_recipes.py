"""Recipes, the shared stage cache, results rows and the generated tables."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sidrec.errors import SidrecError
from sidrec.pipeline import needed
from sidrec.recipes import load_recipe, run_recipe
from sidrec.results import REQUIRED, read_rows, render, summarise

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
RECIPES = sorted((EXP / "recipes").glob("*/*.toml"))


def test_there_are_recipes_for_every_table():
    tables = {p.parent.name for p in RECIPES}
    assert {"reproduce", "letter-ablation", "lcrec", "sasrec", "vqrec", "coldstart", "diversity"} <= tables


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_every_recipe_parses_and_resolves(path):
    cfg = load_recipe(path)  # every section's keys checked against the configs its stage builds
    rec = cfg["recipe"]
    assert rec["table"] == path.parent.name and rec["row"] == path.stem
    stages = needed(cfg)
    assert stages[0] == "data" and len(stages) >= 2
    pub = rec.get("published") or {}
    assert set(pub) <= {"source", "recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20",
                        "recall@50", "ndcg@50"}
    assert not pub or pub.get("source")
    assert all(0 < v < 1 for k, v in pub.items() if k != "source")
    assert cfg["data"].get("inputs"), "a recipe names its input files"


def test_a_typo_in_a_recipe_is_one_line_naming_the_section(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[recipe]\ntable = "t"\n[data]\nsource = "synthetic"\n[tiger]\npreset = "small"\nepochz = 3\n')
    with pytest.raises(SidrecError, match=r"\[tiger\] unknown key\(s\) \['epochz'\]"):
        load_recipe(p)
    p.write_text('[data]\nsource = "synthetic"\n')
    with pytest.raises(SidrecError, match="not a recipe"):
        load_recipe(p)


# -- smoke runs of two real recipes on input files written here ------------------------------------------------
def _write_inputs(root: Path, seed: int = 0) -> None:
    """LETTER-format Beauty and Instruments files (interactions, items, released index) of a planted catalog."""
    rng = np.random.default_rng(seed)
    n_items, n_users = 120, 140
    inter = {}
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        length = int(rng.integers(5, 9))
        inter[str(u)] = [int((start + 3 * k + rng.integers(0, 2)) % n_items) for k in range(length)]
    cats = ["Beauty, Skin Care, Face", "Beauty, Makeup, Eyes", "Beauty, Hair Care, Shampoo", "Beauty, Fragrance"]
    items = {str(i): {"asin": f"B{i:05d}", "title": f"item {i} {cats[i % 4].split(', ')[-1].lower()} product",
                      "categories": cats[i % 4]} for i in range(n_items)}
    index = {str(i): [f"<a_{i % 8}>", f"<b_{(i // 8) % 4}>", f"<c_{i // 32}>", f"<d_{i % 3}>"] for i in range(n_items)}
    for folder, name in (("amazon2014-beauty/letter-format", "Beauty"), ("amazon2018-instruments/letter-format",
                                                                          "Instruments")):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for kind, obj in (("inter", inter), ("index", index)):
            with gzip.open(d / f"{name}.{kind}.json.gz", "wt") as f:
                json.dump(obj, f)
    d = root / "amazon2014-beauty/transrec-format"
    d.mkdir(parents=True, exist_ok=True)
    with gzip.open(d / "Beauty.item.json.gz", "wt") as f:
        json.dump(items, f)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Two representative recipes (text -> LETTER -> TIGER; released IDs -> TIGER) run with --smoke."""
    tmp = tmp_path_factory.mktemp("recipes")
    _write_inputs(tmp / "data")
    work = tmp / "work"
    rows = {}
    for name in ("reproduce/beauty-letter-tiger", "reproduce/instruments-released-ids-tiger"):
        rows[name] = run_recipe(EXP / "recipes" / f"{name}.toml", seed=0, work=work, data_root=tmp / "data",
                                smoke=True)
    return work, rows, tmp


@pytest.mark.slow
def test_smoke_runs_write_rows_with_every_key(smoke):
    work, rows, _ = smoke
    for name, rs in rows.items():
        assert len(rs) == 1
        r = rs[0]
        assert set(REQUIRED) <= set(r), set(REQUIRED) - set(r)
        assert r["smoke"] is True and r["gpu"] in ("cpu",) or r["gpu"].startswith("NVIDIA")
        assert r["table"] == "reproduce" and r["row"] == name.split("/")[1] and r["seed"] == 0
        assert 0 <= r["metrics"]["recall@10"] <= 1 and r["metrics"]["recall@10"] >= r["metrics"]["recall@5"]
        assert r["epochs"] == 2 and r["model"] == "tiger"
    written = read_rows(work / "smoke-results" / "reproduce.jsonl")  # never the committed tables
    assert [r["row"] for r in written] == ["beauty-letter-tiger", "instruments-released-ids-tiger"]
    letter = rows["reproduce/beauty-letter-tiger"][0]
    assert set(letter["stage_seconds"]) == {"data", "embed", "sasrec", "tokenize", "tiger"}
    assert set(rows["reproduce/instruments-released-ids-tiger"][0]["stage_seconds"]) == {"data", "tokenize", "tiger"}


@pytest.mark.slow
def test_stages_are_shared_and_cached_by_fingerprint(smoke):
    work, rows, tmp = smoke
    first = rows["reproduce/beauty-letter-tiger"][0]
    marker = work / "tiger" / first["fingerprints"]["tiger"] / "stage.json"
    before = marker.stat().st_mtime_ns
    again = run_recipe(EXP / "recipes/reproduce/beauty-letter-tiger.toml", seed=0, work=work, data_root=tmp / "data",
                       smoke=True)[0]
    assert marker.stat().st_mtime_ns == before  # nothing ran again
    assert again["metrics"] == first["metrics"] and again["fingerprints"] == first["fingerprints"]
    assert len(read_rows(work / "smoke-results" / "reproduce.jsonl")) == 2  # the same row is not appended twice
    # another Beauty recipe reuses the prepared dataset and the embedding; a new seed retrains only the model
    folders = lambda stage: {p.name for p in (work / stage).iterdir() if not p.name.startswith(".")}  # noqa: E731
    data_before, embed_before = folders("data"), folders("embed")
    other = run_recipe(EXP / "recipes/reproduce/beauty-rqvae-tiger.toml", seed=1, work=work, data_root=tmp / "data",
                       smoke=True)[0]
    assert other["fingerprints"]["data"] == first["fingerprints"]["data"]
    assert other["fingerprints"]["embed"] == first["fingerprints"]["embed"]
    assert other["fingerprints"]["tokenize"] != first["fingerprints"]["tokenize"]
    assert folders("data") == data_before and folders("embed") == embed_before
    seed1 = run_recipe(EXP / "recipes/reproduce/beauty-letter-tiger.toml", seed=1, work=work, data_root=tmp / "data",
                       smoke=True)[0]
    assert seed1["fingerprints"]["tokenize"] == first["fingerprints"]["tokenize"]  # tokens fitted once
    assert seed1["fingerprints"]["tiger"] != first["fingerprints"]["tiger"]


@pytest.mark.slow
def test_until_stops_after_a_stage_and_missing_inputs_are_one_line(smoke, tmp_path):
    work, _, tmp = smoke
    assert run_recipe(EXP / "recipes/reproduce/beauty-rqkmeans-tiger.toml", seed=0, work=tmp_path / "w",
                      data_root=tmp / "data", smoke=True, until="embed") == []
    assert not (tmp_path / "w" / "tiger").exists() and (tmp_path / "w" / "embed").is_dir()
    with pytest.raises(SidrecError, match=r"input file .*Toys_and_Games.txt.gz not found"):
        run_recipe(EXP / "recipes/reproduce/toys-rqvae-tiger.toml", seed=0, work=tmp_path / "w2",
                   data_root=tmp / "data", smoke=True)


@pytest.mark.slow
def test_cli_runs_a_recipe_and_renders_results(smoke, tmp_path):
    _, _, tmp = smoke
    res = tmp_path / "results"
    cmd = [str(Path(__import__("sys").executable).parent / "sidrec"), "run",
           str(EXP / "recipes/reproduce/instruments-released-ids-tiger.toml"), "--smoke", "--seed", "0",
           "--data-root", str(tmp / "data"), "--work", str(tmp_path / "w")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = read_rows(tmp_path / "w" / "smoke-results" / "reproduce.jsonl")
    res.mkdir()
    (res / "reproduce.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([cmd[0], "results", str(res)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "instruments-released-ids-tiger" in md and f"{rows[0]['metrics']['recall@10']:.4f}" in md
    assert (tmp_path / "plots" / "reproduce.png").stat().st_size > 1000


# -- the generated tables ------------------------------------------------------------------------------------------
def _row(seed: int, r10: float, n10: float, **kw) -> dict:
    return {"table": "t", "row": "a", "recipe": "recipes/t/a.toml", "dataset": "d", "model": "tiger",
            "tokens": "rqvae", "seed": seed, "metrics": {"recall@10": r10, "ndcg@10": n10},
            "published": {"source": "paper", "recall@10": 0.08, "ndcg@10": 0.04}, "epochs": 10, "best_epoch": 5,
            "commit": "x", "gpu": "cpu", "versions": {}, "stage_seconds": {}, **kw}


def test_summary_and_table_values_are_computed_from_the_rows(tmp_path):
    rows = [_row(0, 0.06, 0.03), _row(1, 0.07, 0.02)]
    s = summarise(rows)[0]
    assert s["stats"]["recall@10"]["mean"] == pytest.approx(0.065)
    assert s["stats"]["ndcg@10"]["min"] == 0.02 and s["stats"]["ndcg@10"]["max"] == 0.03
    assert s["ratio"]["recall@10"] == pytest.approx(0.065 / 0.08) and s["ratio"]["ndcg@10"] == pytest.approx(0.625)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kernels = [[f"kernel_{i}_" + "x" * 50, 10.0 - i] for i in range(5)]  # a long list cell shows its head
    (tmp_path / "results" / "bench-speed.jsonl").write_text(json.dumps(
        {"bench": "speed", "variant": "new", "samples_per_second": 79499.7, "gpu": "NVIDIA H200",
         "top": kernels}) + "\n")
    md = render(tmp_path / "results", tmp_path / "RESULTS.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("| [a]"))
    assert "0.0650 (0.0600-0.0700)" in line and "0.0250 (0.0200-0.0300)" in line and "81% / 62%" in line
    assert "| new | 79,499.7 | NVIDIA H200 | " in md
    assert '[["kernel_0_' + "x" * 31 + '…", 10.0], ' in md and "… +2 in the jsonl |" in md
    (tmp_path / "results" / "t.jsonl").write_text(json.dumps({"table": "t"}) + "\n")
    with pytest.raises(SidrecError, match=r"t\.jsonl:1: results row lacks"):
        render(tmp_path / "results", tmp_path / "RESULTS.md")


def test_results_md_is_generated_from_the_results_files(tmp_path):
    """The committed RESULTS.md is what `sidrec results experiments/results` writes (nobody edits it by hand)."""
    out = render(EXP / "results", tmp_path / "RESULTS.md", recipes_root=EXP, about=EXP / "tables.toml")
    fresh = out.read_text().replace(str(tmp_path), "")
    committed = (EXP / "RESULTS.md").read_text()
    strip = lambda t: re.sub(r"\]\([^)]*\)", "]()", t)  # noqa: E731 (links are relative to where it is written)
    assert strip(fresh) == strip(committed), "run `sidrec results experiments/results` and commit RESULTS.md"


NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+%"


def test_every_figure_in_the_readme_results_is_in_the_results():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Results"):]
    section = section[:section.find("\n## ", 10)] if "\n## " in section[10:] else section
    claimed = set(re.findall(r"(?<![\w.^-])(" + NUM + r")(?![\w.])", section))
    held = set(re.findall(NUM, (EXP / "RESULTS.md").read_text()))
    for f in (EXP / "results").glob("*.jsonl"):  # single runs' values (e.g. one seed of a row)
        for r in read_rows(f):
            for v in [*(r.get("metrics") or {}).values(), *(x for x in r.values() if isinstance(x, float))]:
                if isinstance(v, (int, float)):
                    held.add(f"{v:.4f}")
    missing = sorted(claimed - held)
    assert not missing, f"README figures not in experiments/RESULTS.md or the results files: {missing}"


def test_the_project_speaks_only_of_itself():
    """No words about how the project was made (work periods, issue numbers, machine rental) in tracked files."""
    words = "|".join(["session [0-9]", "issue [0-9]", r"\ble" + "ase", r"s1[0-9]b?\.jo" + "bs", "-ho" + "ld[0-9]",
                      "nvidia-" + "h200", "gpu/car" + "ry"])
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    hits = [f for f in files if re.search(words, f, re.I)]
    for f in files:
        p = ROOT / f
        if p.suffix in (".png", ".gz", ".npy", ".xlsx") or not p.is_file():
            continue
        text = p.read_text(errors="ignore")
        hits += [f"{f}: {m.group(0)}" for m in re.finditer(words, text, re.I)]
    assert not hits, hits[:20]


def test_training_curves_go_to_tensorboard_when_asked(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sidrec.pipeline import demo_config, run_pipeline

    cfg = demo_config(quick=True)
    cfg["sasrec"] = {**cfg["sasrec"], "epochs": 3, "tensorboard": True}
    cfg.pop("tiger")
    cfg.pop("tokenize")
    run_pipeline(cfg, tmp_path / "p")
    ea = EventAccumulator(str(tmp_path / "p" / "sasrec" / "tensorboard"))
    ea.Reload()
    losses = [e.value for e in ea.Scalars("train/loss")]
    log = [json.loads(x) for x in (tmp_path / "p" / "sasrec" / "log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([r["loss"] for r in log]) and len(losses) == 3
    assert "valid/ndcg@10" in ea.Tags()["scalars"]
    from sidrec.train.loop import TrainConfig

    assert TrainConfig().tensorboard is False  # off by default


@pytest.mark.slow
def test_ensemble_with_another_recipe_fuses_its_cached_run_by_item(smoke, tmp_path):
    """[ensemble] with = [another recipe]: released-ID TIGER fused with the LETTER-token TIGER of the same data;
    the other recipe's run is its own cached one (not retrained), the IDs differ so the fusion is by item; a
    recipe of other data is refused in one line."""
    work, rows, tmp = smoke
    text = (EXP / "recipes/reproduce/beauty-released-ids-tiger.toml").read_text()
    letter = EXP / "recipes/reproduce/beauty-letter-tiger.toml"
    (tmp_path / "fused.toml").write_text(text.replace('table = "reproduce"', 'table = "beyond"') +
                                         f'\n[ensemble]\nmembers = 1\nwith = ["{letter}"]\n')
    base = rows["reproduce/beauty-letter-tiger"][0]
    marker = work / "tiger" / base["fingerprints"]["tiger"] / "stage.json"
    before = marker.stat().st_mtime_ns
    r = run_recipe(tmp_path / "fused.toml", seed=0, work=work, data_root=tmp / "data", smoke=True)[0]
    assert r["model"] == "ensemble" and marker.stat().st_mtime_ns == before
    m = json.loads((work / "ensemble" / r["fingerprints"]["ensemble"] / "metrics.json").read_text())
    assert m["fuse"] == "items" and len(m["members"]) == 2
    assert Path(m["members"][1]["run"]) == (work / "tiger" / base["fingerprints"]["tiger"]).resolve()
    assert r["metrics"]["recall@10"] == round(m["test"]["recall@10"], 6)
    other = EXP / "recipes/reproduce/instruments-released-ids-tiger.toml"
    (tmp_path / "bad.toml").write_text(text.replace('table = "reproduce"', 'table = "beyond"') +
                                       f'\n[ensemble]\nmembers = 1\nwith = ["{other}"]\n')
    with pytest.raises(SidrecError, match="its data differ"):
        run_recipe(tmp_path / "bad.toml", seed=0, work=work, data_root=tmp / "data", smoke=True)
    (tmp_path / "missing.toml").write_text(text + '\n[ensemble]\nwith = ["nowhere.toml"]\n')
    with pytest.raises(SidrecError, match="no such recipe file"):
        run_recipe(tmp_path / "missing.toml", seed=0, work=work, data_root=tmp / "data", smoke=True)


def test_ensemble_stage_reuses_the_rows_run_and_trains_the_other_seed(smoke, tmp_path):
    """[ensemble] members = 2: the seed's generator run is the plain recipe's own (cached, not retrained), the second
    member is trained at seed + 1000, and the row holds the ensemble's test metrics with the members' beside them."""
    work, rows, tmp = smoke
    text = (EXP / "recipes/reproduce/instruments-released-ids-tiger.toml").read_text()
    (tmp_path / "ens.toml").write_text(text.replace('table = "reproduce"', 'table = "beyond"') +
                                       "\n[ensemble]\nmembers = 2\n")
    base = rows["reproduce/instruments-released-ids-tiger"][0]
    marker = work / "tiger" / base["fingerprints"]["tiger"] / "stage.json"
    before = marker.stat().st_mtime_ns
    r = run_recipe(tmp_path / "ens.toml", seed=0, work=work, data_root=tmp / "data", smoke=True)[0]
    assert r["model"] == "ensemble" and r["fingerprints"]["tiger"] == base["fingerprints"]["tiger"]
    assert marker.stat().st_mtime_ns == before  # the first member was not trained again
    m = json.loads((work / "ensemble" / r["fingerprints"]["ensemble"] / "metrics.json").read_text())
    first, second = (Path(x["run"]) for x in m["members"])
    assert first == (work / "tiger" / base["fingerprints"]["tiger"]).resolve() and second != first
    assert json.loads((second / "config.json").read_text())["train"]["seed"] == 1000
    assert abs(m["members"][0]["test"]["recall@10"] - base["metrics"]["recall@10"]) < 1e-6
    assert r["metrics"]["recall@10"] == round(m["test"]["recall@10"], 6)
