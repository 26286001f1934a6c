"""The fast generator step: compiled == eager, compile fallback, lr rule, TIGER resume, loss-based selection."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import pattern_dataset

from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from sidrec.train.loop import Compiled, TrainConfig, scaled_lr

TINY = TIGERConfig(preset="custom", n_layers=1, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0, max_history=4)


def _model_and_batch(seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, 8, (60, 3)), axis=0)[:40]
    model = TIGER(TINY, Vocab([8, 8, 8]), codes)
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, 41, (16, 4), generator=g)
    hist[:, -1] = torch.randint(1, 41, (16,), generator=g)  # at least one item per history
    return model, (torch.arange(16), hist, torch.randint(1, 41, (16,), generator=g))


def test_compiled_step_equals_eager_step():
    """Tolerance: 1e-4 relative on the loss and on the gradients (float32 on CPU; kernel fusion reorders sums)."""
    model, batch = _model_and_batch()
    eager = model(*batch)
    eager.backward()
    g_eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    step = Compiled(model, log=lambda s: pytest.fail(f"compile fell back: {s}"))
    comp = step(*batch)
    comp.backward()
    assert abs(comp.item() - eager.item()) <= 1e-4 * abs(eager.item())
    for a, p in zip(g_eager, model.parameters()):
        assert (p.grad - a).norm() <= 1e-4 * a.norm() + 1e-7


@pytest.mark.slow
def test_compiled_step_keeps_its_work_in_the_sidrec_cache(tmp_path, monkeypatch):
    """The compiled step's caches live under $SIDREC_CACHE/compile; its portable artifacts are saved in one file
    that a later process (or another machine) loads before compiling; a damaged file costs only a recompile."""
    import os

    monkeypatch.setenv("SIDREC_CACHE", str(tmp_path))
    saved = {k: os.environ.pop(k, None) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    try:
        model, batch = _model_and_batch()
        lines = []
        step = Compiled(model, lines.append, batch_size=16, cache=True)
        first = step(*batch)
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile" / "inductor")
        step.save_cache()
        files = list((tmp_path / "compile" / "artifacts").glob("*.bin"))
        assert len(files) == 1 and files[0].stat().st_size > 0 and "compile cache saved" in lines[-1]
        torch._dynamo.reset()
        lines.clear()
        again = Compiled(_model_and_batch()[0], lines.append, batch_size=16, cache=True)
        assert lines and lines[0].startswith("compile cache: ")
        assert torch.equal(again(*batch), first)
        other = Compiled(_model_and_batch()[0], lines.append, batch_size=8, cache=True)  # another shape, another key
        assert other.artifacts.path != files[0]
        files[0].write_bytes(b"not an artifact")
        torch._dynamo.reset()
        lines.clear()
        damaged = Compiled(_model_and_batch()[0], lines.append, batch_size=16, cache=True)
        assert len(lines) == 1 and "not used" in lines[0] and "\n" not in lines[0]
        assert torch.allclose(damaged(*batch), first, rtol=1e-5)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def test_compile_failure_falls_back_to_eager_with_one_line(monkeypatch):
    model, batch = _model_and_batch(1)

    def broken(*a, **k):
        def fn(*x, **y):
            raise RuntimeError("no C++ compiler found\nlong traceback")
        return fn

    monkeypatch.setattr(torch, "compile", broken)
    lines = []
    step = Compiled(model, log=lines.append)
    with torch.no_grad():
        out1, out2, ref = step(*batch), step(*batch), model(*batch)
    assert out1 == ref == out2
    assert len(lines) == 1 and "no C++ compiler found" in lines[0] and "\n" not in lines[0]


def test_batch_size_lr_rule():
    base = dict(learning_rate=1e-3, warmup_steps=1000, base_batch_size=256)
    assert scaled_lr(TrainConfig(**base, batch_size=1024, lr_scale="sqrt")) == pytest.approx(2e-3)
    assert scaled_lr(TrainConfig(**base, batch_size=1024, lr_scale="linear")) == pytest.approx(4e-3)
    assert scaled_lr(TrainConfig(**base, batch_size=1024, lr_scale="none")) == pytest.approx(1e-3)
    assert scaled_lr(TrainConfig(**base, batch_size=64, lr_scale="sqrt")) == pytest.approx(5e-4)


_pattern_run = pattern_dataset


def test_tiger_resume_equals_unbroken_run(tmp_path):
    from sidrec.train.tiger import train_tiger

    ds = _pattern_run(tmp_path)
    cfg = TIGERConfig(preset="custom", n_layers=1, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.1,
                      max_history=3)
    kw = dict(beam=10, ks=(1, 5, 10), log=lambda s: None)
    tc = dict(batch_size=32, learning_rate=3e-3, eval_every=1, seed=0, patience=100)
    full = train_tiger(ds, tmp_path / "tok", tmp_path / "a", cfg, TrainConfig(epochs=4, **tc), **kw)
    train_tiger(ds, tmp_path / "tok", tmp_path / "b", cfg, TrainConfig(epochs=2, **tc), **kw)  # "killed" after 2
    resumed = train_tiger(ds, tmp_path / "tok", tmp_path / "b", cfg, TrainConfig(epochs=4, **tc), **kw)
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    la = [json.loads(x)["loss"] for x in open(tmp_path / "a" / "log.jsonl")]
    lb = [json.loads(x)["loss"] for x in open(tmp_path / "b" / "log.jsonl")]
    assert la == lb
    # a checkpoint resumes only onto what it was trained on: another model shape or other token codes is one line,
    # and the run folder is left as it was (a run copied from another machine must not continue on something else)
    import shutil

    from sidrec.errors import SidrecError

    before = {f: (tmp_path / "b" / f).read_bytes() for f in ("config.json", "checkpoint.pt")}
    with pytest.raises(SidrecError, match="another model"):
        train_tiger(ds, tmp_path / "tok", tmp_path / "b", replace(cfg, d_ff=128), TrainConfig(epochs=6, **tc), **kw)
    shutil.copytree(tmp_path / "tok", tmp_path / "tok2")
    codes = np.load(tmp_path / "tok2" / "codes.npy")
    np.save(tmp_path / "tok2" / "codes.npy", codes[:, [1, 0, *range(2, codes.shape[1])]])
    with pytest.raises(SidrecError, match="another tokens_codes_sha256"):
        train_tiger(ds, tmp_path / "tok2", tmp_path / "b", cfg, TrainConfig(epochs=6, **tc), **kw)
    assert before == {f: (tmp_path / "b" / f).read_bytes() for f in before}


def test_selection_on_validation_loss(tmp_path):
    """LETTER's early-stopping signal: the kept model is the epoch of the lowest teacher-forced validation loss."""
    from sidrec.train.tiger import train_tiger

    ds = _pattern_run(tmp_path)
    cfg = TIGERConfig(preset="custom", n_layers=1, d_model=32, n_heads=2, d_kv=16, d_ff=64, dropout=0.0,
                      max_history=3)
    m = train_tiger(ds, tmp_path / "tok", tmp_path / "run", cfg,
                    TrainConfig(epochs=6, batch_size=32, learning_rate=3e-3, eval_every=1, select_metric="loss",
                                patience=100, seed=0), beam=10, ks=(1, 5, 10), log=lambda s: None)
    losses = [json.loads(x)["validation"]["loss"] for x in open(tmp_path / "run" / "log.jsonl")]
    assert m["best_epoch"] == int(np.argmin(losses)) + 1
    assert m["validation"]["loss"] == pytest.approx(min(losses))
    assert losses[-1] < losses[0]  # it learns
    assert m["test"]["recall@10"] > 0.5


def test_bucket_widths_are_optimal():
    """The widths minimise the padded positions: checked against every choice of widths by brute force."""
    import itertools

    from sidrec.train.tiger import bucket_widths

    rng = np.random.default_rng(0)
    for _ in range(200):
        H, k = int(rng.integers(2, 10)), int(rng.integers(1, 5))
        lengths = rng.integers(1, H + 1, int(rng.integers(1, 40)))

        def cost(w):
            w = sorted(set(w) | {H})
            return np.asarray(w)[np.searchsorted(w, lengths)].sum()

        w = bucket_widths(lengths, H, k)
        assert len(w) <= k and w[-1] == H and w == sorted(set(w))
        assert cost(w) == min(cost(c) for j in range(k) for c in itertools.combinations(range(1, H), j))


def test_length_buckets_serve_every_sample_once_cut_exactly():
    from sidrec.train.tiger import PrefixBatches

    rng = np.random.default_rng(1)
    n, H = 500, 12
    lengths = np.minimum(rng.geometric(0.25, n), H)
    hist = np.where(np.arange(H)[None, :] >= H - lengths[:, None], rng.integers(1, 50, (n, H)), 0)
    users, target = np.arange(n), rng.integers(1, 50, n)
    pb = PrefixBatches(users, hist, target, batch_size=32, buckets=3, seed=0, device=torch.device("cpu"))
    assert len(pb.widths) == 3 and pb.padded_share < 1 - lengths.mean() / H
    seen, shapes, n_batches = [], set(), 0
    for u, h, t in pb(0):
        n_batches += 1
        shapes.add(tuple(h.shape))
        assert h.shape[1] in pb.widths and len(u) <= 32
        assert torch.equal(h, torch.as_tensor(hist[u.numpy()])[:, H - h.shape[1]:])  # the cut drops padding only
        assert ((h > 0).sum(1) == torch.as_tensor(lengths[u.numpy()])).all()
        if h.shape[1] > pb.widths[0]:  # a batch sits in the smallest width that holds it
            assert (h > 0).sum(1).min() > pb.widths[pb.widths.index(h.shape[1]) - 1]
        seen.append(u.numpy())
    assert n_batches == pb.steps and sorted(np.concatenate(seen)) == list(range(n))
    assert len({s for s in shapes if s[0] == 32}) == 3  # one full-batch shape per width: one graph each
    again = [u.numpy() for u, _, _ in pb(0)]
    other = [u.numpy() for u, _, _ in pb(1)]
    assert all(np.array_equal(a, b) for a, b in zip(seen, again))  # seeded by (seed, epoch)
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(seen, other))


def test_cut_history_gives_the_same_loss_and_decoding():
    """T5's relative positions: dropping all-padding columns changes neither the loss nor beam search."""
    from sidrec.decoding.beam import generate
    from sidrec.decoding.trie import Trie

    model, (u, hist, t) = _model_and_batch()
    model.eval()
    hist[:, :2] = 0  # two all-padding columns
    with torch.no_grad():
        assert model(u, hist, t).item() == pytest.approx(model(u, hist[:, 2:], t).item(), rel=1e-5)
        trie = Trie(model.item_tok[1:].numpy() - np.asarray(model.vocab.offsets), model.vocab.level_sizes)
        a, sa = generate(model, u, hist, trie, beam=5, k=5)
        b, sb = generate(model, u, hist[:, 2:], trie, beam=5, k=5)
    assert torch.equal(a, b) and torch.allclose(sa, sb, atol=1e-4)


def test_compiled_step_runs_remainder_batches_eagerly(monkeypatch):
    """Only full batches go through the compiled graph; an epoch's remainder batch runs eagerly."""
    model, batch = _model_and_batch()
    step = Compiled(model, log=lambda s: pytest.fail(s), batch_size=16)
    calls = []
    step.fn = lambda *a: calls.append(a[0].shape[0]) or model(*a)
    step(*batch)
    step(*(b[:5] for b in batch))
    assert calls == [16]


def test_time_budget_never_starts_an_epoch_that_would_overrun(tmp_path, monkeypatch):
    """--max-minutes: at the mean epoch time so far, no epoch starts that would end past the budget (a fake clock:
    every epoch takes 10 s; budget 30 s -> 3 epochs ending at 30 s, where a check after the fact ran 4 to 40 s)."""
    import sidrec.train.loop as loop

    clock = [1000.0]
    monkeypatch.setattr(loop.time, "time", lambda: clock[0])
    model = torch.nn.Linear(2, 1)

    def loss_fn(m, batch):
        clock[0] += 10.0
        return m(batch[0]).pow(2).mean()

    cfg = TrainConfig(epochs=10, batch_size=4, max_minutes=0.5, select_metric="loss", patience=100, device="cpu")
    res = loop.fit(model, cfg=cfg, run_dir=tmp_path, device=torch.device("cpu"),
                   batches=lambda e: [(torch.ones(4, 2),)], steps_per_epoch=1, loss_fn=loss_fn,
                   validate=lambda m: {"loss": 1.0})
    assert res.stopped == "time" and len(res.history) == 3 and res.seconds == 30.0
