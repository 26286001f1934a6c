"""torchrun-style data parallelism on CPU (gloo): 2 processes, each with half of every global batch (odd
remainders split unevenly and weighted), follow 1 process with the whole batch within 1e-4 relative on every
epoch's training and validation loss, and a killed 2-process run resumes to the same result."""

import json
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sidrec.models.tiger import TIGERConfig

CFG = TIGERConfig(preset="custom", n_layers=1, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0, max_history=3)
LCREC = dict(model="tiny-llama", hidden_size=32, num_hidden_layers=2, dropout=0.0, max_history=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, tok: str, out: str, epochs: int, kind: str = "tiger") -> None:
    """One torchrun-style process training ``kind`` (tiger, or lcrec under full fine-tuning); logs to OUT.rankR.log."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from sidrec.data.dataset import load_dataset
    from sidrec.models.lcrec import LCRecConfig
    from sidrec.train.lcrec import train_lcrec
    from sidrec.train.tiger import train_tiger
    from sidrec.utils.dist import abandon, setup, teardown

    def log(s):
        with open(f"{out}.rank{rank}.log", "a") as f:
            f.write(s + "\n")

    setup()
    try:
        if kind == "lcrec":
            train_lcrec(load_dataset(data), tok, out, LCRecConfig(**LCREC), _train_cfg(epochs), beam=10, ks=(5, 10),
                        log=log)
        else:
            train_tiger(load_dataset(data), tok, out, CFG, _train_cfg(epochs), beam=10, ks=(5, 10), log=log)
    except BaseException:
        abandon()  # the other rank fails at its next collective instead of waiting 30 minutes here
        raise
    teardown()


def _train_cfg(epochs):
    from sidrec.train.loop import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=32, learning_rate=3e-3, eval_every=1, select_metric="loss",
                       patience=100, seed=0, length_buckets=1, device="cpu")


def _two_procs(tmp_path, out, epochs):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ds"), str(tmp_path / "tok"), str(out), epochs),
             nprocs=2, join=True)


def _curve(run):
    return [json.loads(x) for x in open(run / "log.jsonl")]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_follow_the_single_process_curve_and_resume(tmp_path):
    from test_fast_trainer import _pattern_run

    from sidrec.train.tiger import train_tiger

    ds = _pattern_run(tmp_path)
    one = train_tiger(ds, tmp_path / "tok", tmp_path / "one", CFG, _train_cfg(4), beam=10, ks=(5, 10),
                      log=lambda s: None)
    _two_procs(tmp_path, tmp_path / "two", 4)
    a, b = _curve(tmp_path / "one"), _curve(tmp_path / "two")
    assert [r["world_size"] for r in b] == [2] * 4 and "world_size" not in a[0]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-4)
    np.testing.assert_allclose([r["validation"]["loss"] for r in b], [r["validation"]["loss"] for r in a], rtol=1e-4)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert abs(two["test"]["recall@10"] - one["test"]["recall@10"]) <= 0.02
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
    # a 2-process run killed after 2 epochs resumes to the unbroken 2-process result
    _two_procs(tmp_path, tmp_path / "resumed", 2)
    _two_procs(tmp_path, tmp_path / "resumed", 4)
    c = _curve(tmp_path / "resumed")
    np.testing.assert_allclose([r["loss"] for r in c], [r["loss"] for r in b], rtol=1e-5)
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["test"] == two["test"]


def test_torchrun_cli_two_processes(tmp_path, syn_dir):
    """`torchrun --nproc_per_node 2 -m sidrec train sasrec`: one run directory, written by rank 0."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "sidrec",
                        "train", "sasrec", str(syn_dir), "--out", str(tmp_path / "run"), "--epochs", "2",
                        "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 2
    assert r.stdout.count("test, ") == 1  # the test table once, from rank 0


# 32 codes per level for 150 items: some die and are re-seeded at epochs 5 and 10. Twelve epochs, not more: the two
# runs differ by float rounding (1e-5 on the weights after 12 epochs), which long fits on this ambiguous catalog
# amplify into different codes (30 epochs of 8x8 codes: 67% equal, with no re-seeding at all)
TOK_OV = dict(epochs=12, batch_size=64, codebook_size=32, n_levels=2, reseed_every=5, check_every=10, log_every=10,
              device="cpu", seed=0)


def _tok_worker(rank: int, world: int, port: int, ds: str, emb: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from sidrec.data.dataset import load_dataset
    from sidrec.tokenizers.stage import tokenize
    from sidrec.utils.dist import abandon, setup, teardown

    setup()
    try:
        tokenize(load_dataset(ds), out, method="rqvae", embeddings=emb, log=lambda s: None,
                 overrides=TOK_OV)
    except BaseException:
        abandon()  # the other rank fails at its next collective instead of waiting 30 minutes here
        raise
    teardown()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_rqvae_two_processes_equal_one(tmp_path, syn_dir):
    """RQ-VAE under torchrun (2 gloo processes, half of every batch each, re-seeding synchronised from rank 0)
    gives the single process's codes and reconstruction; only rank 0 writes."""
    from sidrec.data.dataset import load_dataset
    from sidrec.tokenizers.stage import tokenize

    ds = load_dataset(syn_dir)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", np.vstack([np.zeros((1, 16)), rng.normal(size=(ds.n_items, 16))]).astype(np.float32))
    one = tokenize(ds, tmp_path / "one", method="rqvae", embeddings=tmp_path / "emb.npy", overrides=TOK_OV,
                   log=lambda s: None)
    mp.spawn(_tok_worker, args=(2, _free_port(), str(syn_dir), str(tmp_path / "emb.npy"), str(tmp_path / "two")),
             nprocs=2, join=True)
    a, b = np.load(tmp_path / "one" / "codes.npy"), np.load(tmp_path / "two" / "codes.npy")
    assert (a == b).all(1).mean() >= 0.97
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    # codes died and were re-seeded from the same residuals (rank 0 re-seeding from its half of the batch only
    # agreed on 6% of the items' codes)
    assert two["reseeded_codes"] == one["reseeded_codes"] > 0
    assert two["reconstruction_mse"] == pytest.approx(one["reconstruction_mse"], rel=1e-3)
    assert json.loads((tmp_path / "two" / "tokenizer.json").read_text())["world_size"] == 2


VQ_SMALL = dict(n_levels=4, codebook_size=16, dim=32, n_layers=1, n_heads=2, inner=32, dropout=0.0, max_history=20)


def _vq_worker(rank: int, world: int, port: int, doms: list[str], target: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from sidrec.utils.dist import abandon, setup, teardown

    setup()
    try:
        _vq_run(doms, target, out)
    except BaseException:
        abandon()  # the other rank fails at its next collective instead of waiting 30 minutes here
        raise
    teardown()


def _vq_run(doms, target, out):
    from pathlib import Path

    from sidrec.data.dataset import load_dataset
    from sidrec.embeddings.text import EmbedConfig
    from sidrec.models.vqrec import VQRecConfig
    from sidrec.train.loop import TrainConfig
    from sidrec.train.vqrec import VQRecTrainConfig, finetune_vqrec, pretrain_vqrec

    out, ecfg, mcfg = Path(out), EmbedConfig(encoder="tfidf", dim=32), VQRecConfig(**VQ_SMALL)
    tc = dict(batch_size=64, eval_every=1, seed=0, device="cpu")
    pretrain_vqrec([load_dataset(d) for d in doms], out / "pre", mcfg, VQRecTrainConfig(rho=0.0),
                   TrainConfig(epochs=3, patience=10, **tc), ecfg, log=lambda s: None)
    finetune_vqrec(load_dataset(target), out / "ft", init=out / "pre", model_cfg=mcfg,
                   vq_cfg=VQRecTrainConfig(permutation_epochs=2),
                   train_cfg=TrainConfig(epochs=3, patience=10, **tc), embed_cfg=ecfg, log=lambda s: None)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_vqrec_two_processes_follow_one(tmp_path):
    """VQ-Rec under torchrun: the contrastive pre-training loss uses the whole global batch's targets as
    negatives (gathered from both ranks; with each rank's half only, the loss would be ~log 2 = 0.69 lower),
    fine-tuning follows too; rank 0 alone writes and tests."""
    from sidrec.data.prepare import prepare
    from sidrec.data.sources import read_source

    dirs = []
    for name, seed in (("a", 11), ("b", 12), ("t", 13)):
        prepare(read_source("synthetic", [], synthetic={"n_users": 300, "n_items": 120, "seed": seed}),
                tmp_path / name, source="synthetic")
        dirs.append(str(tmp_path / name))
    _vq_run(dirs[:2], dirs[2], tmp_path / "one")
    mp.spawn(_vq_worker, args=(2, _free_port(), dirs[:2], dirs[2], str(tmp_path / "two")), nprocs=2, join=True)
    # pre-training (contrastive, negatives gathered over ranks) follows within 1e-3; fine-tuning within 2% (the
    # hard permutation after stage 1 may resolve a near-tie differently; CE rows are weighted per sequence)
    for stage, rtol in (("pre/pretrain", 1e-3), ("ft/stage1", 0.02), ("ft/stage2", 0.02)):
        a, b = _curve(tmp_path / "one" / stage), _curve(tmp_path / "two" / stage)
        assert [r["world_size"] for r in b] == [2] * len(a)
        np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=rtol, err_msg=stage)
    one = json.loads((tmp_path / "one" / "ft" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "ft" / "metrics.json").read_text())
    # 300 test users: two binomial standard errors of R@10 ~ 0.06
    assert abs(two["test"]["recall@10"] - one["test"]["recall@10"]) <= 0.06
    assert json.loads((tmp_path / "two" / "ft" / "run.json").read_text())["world_size"] == 2
    assert (np.load(tmp_path / "two" / "pre" / "codes.npy") == np.load(tmp_path / "one" / "pre" / "codes.npy")).all()



@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_lcrec_full_finetuning_sharded_with_fsdp_follows_one_process(tmp_path):
    """LC-Rec under full fine-tuning on 2 processes is sharded with FSDP (each rank holds half of every weight, its
    gradient and optimizer state): the training and validation loss of every epoch follow 1 process on the whole
    batch; the best weights are gathered into one file that loads unsharded and gives rank 0's test lists; a
    run stopped after 1 epoch resumes from its gathered checkpoint to the unbroken run's curve."""
    pytest.importorskip("transformers")
    from test_fast_trainer import _pattern_run

    from sidrec.models.lcrec import LCRecConfig
    from sidrec.train.lcrec import load_lcrec, train_lcrec
    from sidrec.train.tiger import decode_users

    ds = _pattern_run(tmp_path)
    train_lcrec(ds, tmp_path / "tok", tmp_path / "one", LCRecConfig(**LCREC), _train_cfg(2), beam=10, ks=(5, 10),
                log=lambda s: None)

    def two(out, epochs):
        mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ds"), str(tmp_path / "tok"), str(out), epochs,
                                "lcrec"), nprocs=2, join=True)

    two(tmp_path / "two", 2)
    a, b = _curve(tmp_path / "one"), _curve(tmp_path / "two")
    assert [r["world_size"] for r in b] == [2] * 2 and a[-1]["loss"] < a[0]["loss"]
    assert "sharded over 2 ranks (FSDP)" in (tmp_path / "two.rank0.log").read_text()
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-4)
    np.testing.assert_allclose([r["validation"]["loss"] for r in b], [r["validation"]["loss"] for r in a], rtol=1e-4)
    model, trie, _ = load_lcrec(tmp_path / "two")
    assert model.finetune == "full"
    again = decode_users(model, trie, ds, "test", beam=10, k=10, batch_size=64, device="cpu")
    assert (again == np.load(tmp_path / "two" / "test_top.npy")[:, :10]).all()
    two(tmp_path / "resumed", 1)
    two(tmp_path / "resumed", 2)
    np.testing.assert_allclose([r["loss"] for r in _curve(tmp_path / "resumed")], [r["loss"] for r in b], rtol=1e-5)


def test_resume_check_reads_the_run_before_rank_0_rewrites_it(tmp_path, monkeypatch):
    """Every rank reads config.json before the barrier after which rank 0 rewrites it (a rank that read it
    mid-rewrite saw an empty file); the rewrite itself replaces the file whole."""
    from sidrec.errors import SidrecError
    from sidrec.utils import runinfo

    run = tmp_path / "run"
    runinfo.write_run_info(run, kind="tiger", config={"model": {"d_model": 32}})
    (run / "checkpoint.pt").write_bytes(b"x")

    def rank0_rewrites():  # what the other ranks may see once the barrier is passed
        (run / "config.json").write_text("")

    monkeypatch.setattr(runinfo, "barrier", rank0_rewrites)
    runinfo.check_resumable(run, {"kind": "tiger", "model": {"d_model": 32}})
    runinfo.write_run_info(run, kind="tiger", config={"model": {"d_model": 32}})
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "run.json"]  # no part files
    with pytest.raises(SidrecError, match="another model"):
        runinfo.check_resumable(run, {"kind": "tiger", "model": {"d_model": 64}})


def _failing_worker(rank: int, port: int) -> None:
    import os
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    from sidrec.utils.dist import abandon, barrier, setup, teardown

    setup()
    try:
        if rank == 1:
            raise ValueError("bad record on rank 1")
        time.sleep(1)
        barrier()
        barrier()
    except BaseException:
        abandon()
        raise
    teardown()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_a_failing_rank_ends_the_run_at_once():
    import time

    t = time.time()
    with pytest.raises(Exception, match="bad record on rank 1"):
        mp.spawn(_failing_worker, args=(_free_port(),), nprocs=2, join=True)
    assert time.time() - t < 120  # not gloo's 30-minute timeout
