"""RPG (parallel ID tokens): exact catalog ranking equals brute force and the trie's exhaustive beam, cutting left
padding changes nothing, it learns a planted pattern through the CLI and the pipeline, and reloads."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from sidrec.decoding.beam import beam_search, generate
from sidrec.decoding.trie import build_trie
from sidrec.models.rpg import RPG, RPGConfig
from sidrec.models.tiger import Vocab
from test_tiger import catalog, planted_run

CFG = RPGConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, temperature=0.1, max_history=6)


def _model(seed=0, sizes=(4, 4, 3), n=30):
    torch.manual_seed(seed)
    codes = catalog(n=n, sizes=sizes, seed=seed)
    m = RPG(CFG, Vocab(list(sizes)), codes).eval()
    with torch.no_grad():  # heads away from the identity, so digits differ
        m.head_w.normal_(0, 0.3)
    return m, codes, build_trie(codes, list(sizes))


def test_exact_ranking_equals_brute_force_and_the_exhaustive_beam():
    m, codes, trie = _model()
    users, hist = torch.arange(4), torch.tensor([[0, 0, 3, 5], [0, 1, 2, 7], [4, 4, 9, 11], [0, 0, 0, 2]])
    items, scores = generate(m, users, hist, trie, beam=5, k=10)
    lp = torch.log_softmax(m.digit_logits(hist), -1)  # (B, m, K)
    brute = torch.stack([sum(lp[:, j, c[j]] for j in range(len(c))) for c in codes], 1)  # (B, n), item i + 1
    order = brute.argsort(1, descending=True)[:, :10] + 1
    assert torch.equal(items, order)
    assert torch.allclose(scores, brute.gather(1, order - 1), atol=1e-5)
    # the beam hooks are the same model: an exhaustive beam returns the same items in the same order
    beam_items, beam_scores = beam_search(m.decode_step, m.decode_start(users, hist), batch=4, trie=trie,
                                          offsets=m.vocab.offsets, beam=len(codes), k=10, reorder_fn=m.decode_reorder)
    assert torch.equal(beam_items, items)
    assert torch.allclose(beam_scores, scores, atol=1e-5)


def test_left_padding_is_exact_and_teacher_forced_matches_the_loss():
    m, _, _ = _model(seed=1)
    hist = torch.tensor([[0, 0, 0, 3, 5], [0, 2, 8, 1, 4]])
    short = hist[:, 1:]
    assert torch.allclose(m.digit_logits(hist), m.digit_logits(short), atol=1e-5)
    users, target = torch.arange(2), torch.tensor([6, 9])
    logits, labels = m.teacher_forced(users, hist, target)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
    assert torch.allclose(ce, m(users, hist, target), atol=1e-5)


def test_sequence_loss_is_the_mean_of_each_prefixs_loss():
    """``sequence_loss``: in training, the loss of one sequence is the mean over its positions of the loss each
    prefix gives alone (positions count from the first item, so left padding is exact too); in evaluation the
    next item's loss as before."""
    torch.manual_seed(3)
    codes = catalog(n=30, sizes=(4, 4, 3), seed=3)
    m = RPG(dataclasses.replace(CFG, sequence_loss=True), Vocab([4, 4, 3]), codes)
    with torch.no_grad():
        m.head_w.normal_(0, 0.3)
    hist, target = torch.tensor([[0, 0, 3, 5, 9], [0, 8, 1, 4, 6]]), torch.tensor([7, 10])
    users = torch.arange(2)
    assert torch.allclose(m.eval().digit_logits(hist), m.digit_logits(hist[:, 1:]), atol=1e-5)
    seq = torch.cat([hist, target[:, None]], 1)
    per_prefix = []
    for b in range(2):
        for t in range(hist.shape[1]):
            if hist[b, t] > 0:  # the prefix ending at t, left-padded, predicts the item after t
                h = torch.cat([torch.zeros(hist.shape[1] - t - 1, dtype=torch.long), hist[b, :t + 1]])[None]
                per_prefix.append(m(users[b:b + 1], h, seq[b:b + 1, t + 1]))
    assert len(per_prefix) == 7
    expected = torch.stack(per_prefix).mean()
    assert torch.allclose(m.train()(users, hist, target), expected, atol=1e-5)  # dropout 0: train = eval math
    assert torch.allclose(m.eval()(users, hist, target), m(users, hist[:, -5:], target), atol=1e-6)
    assert not torch.allclose(m.eval()(users, hist, target), expected, atol=1e-3)


def test_uneven_levels_never_score_padding_codes():
    m, codes, trie = _model(seed=2, sizes=(5, 2, 3), n=25)
    lp = torch.log_softmax(m.digit_logits(torch.tensor([[1, 2]])), -1)
    assert torch.isinf(lp[0, 1, 2:]).all() and torch.isinf(lp[0, 2, 3:]).all()
    assert torch.allclose(lp.exp().sum(-1), torch.ones(1, 3))
    items, _ = generate(m, torch.zeros(1, dtype=torch.long), torch.tensor([[1, 2]]), trie, k=25)
    assert sorted(items[0].tolist()) == list(range(1, 26))  # every item once, none invented


@pytest.mark.parametrize("sequence_loss", [False, True])
def test_learns_a_planted_pattern_through_the_cli_and_reloads(tmp_path, cli, sequence_loss):
    """Item i is always followed by item i+1 (mod 40): `sidrec train rpg` must find it (one sample per prefix, or
    one sequence per user with a loss at every position); the run reloads."""
    planted_run(tmp_path)
    out = tmp_path / "run"
    code, stdout, stderr = cli("train", "rpg", str(tmp_path / "ds"), "--tokens", str(tmp_path / "tok"), "--out", str(out),
            "--d-model", "64", "--n-heads", "4", "--d-ff", "128", "--dropout", "0", "--temperature", "0.1",
            "--max-history", "3", "--epochs", "15", "--batch-size", "64" if not sequence_loss else "16",
            "--lr", "3e-3", "--seed", "0", "--set", "warmup_steps=20",
            *(["--sequence-loss", "--valid-users", "60", "--no-compile"] if sequence_loss else []))
    assert code == 0, stdout + stderr
    assert ("a loss at every position" in stdout + stderr) == sequence_loss
    conf = json.loads((out / "config.json").read_text())
    assert conf["model"]["sequence_loss"] == sequence_loss and conf["decode"]["valid_users"] == (60 if sequence_loss else 0)
    assert conf["train"]["compile"] is (False if sequence_loss else None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "rpg" and metrics["test"]["recall@5"] > 0.9 and metrics["test"]["ndcg@5"] > 0.8, metrics["test"]
    from sidrec.train.generator import load_generator
    model, trie, conf = load_generator(out)
    assert conf["kind"] == "rpg"
    top = np.load(out / "test_top.npy")
    from sidrec.data.dataset import load_dataset
    ds = load_dataset(tmp_path / "ds")
    u, h, _ = ds.eval_inputs("test", 3)
    items, _ = generate(model, torch.as_tensor(u[:50]), torch.as_tensor(h[:50]), trie, k=top.shape[1])
    assert np.array_equal(items.numpy(), top[:50])  # the reloaded run ranks as the trained one did
    code, stdout, stderr = cli("recommend", str(out), "--history", "i5", "--history", "i6", "--k", "3")
    assert code == 0, stderr
    first = next(line for line in stdout.splitlines() if line.strip().startswith("│ 1"))
    assert "i7" in first, stdout  # the planted successor, through `sidrec recommend`


def test_coldstart_scores_new_items_by_their_own_digits(cli, syn_dir, tmp_path):
    """`evaluate-coldstart --model rpg`: held-out items get OPQ digits from their text and the prefix rule scores
    them exactly (the sum of their digits' log-probabilities), equal to the catalog ranking's own scores."""
    out = tmp_path / "cold"
    code, so, se = cli("evaluate-coldstart", syn_dir, "--out", out, "--model", "rpg", "--holdout", "0.2",
                       "--epsilon", "0.2", "--encoder", "tfidf", "--method", "opq", "--levels", "4",
                       "--codebook-size", "16", "--epochs", "2", "--device", "cpu", "--rule", "prefix",
                       "--set", "d_model=32", "--set", "n_heads=2", "--set", "d_ff=64")
    assert code == 0, se
    rows = json.loads((out / "coldstart.json").read_text())["rows"]
    assert {r["rule"] for r in rows} >= {"prefix"} and all(0 <= r["recall@10"] <= 1 for r in rows)
    from sidrec.decoding.beam import prefix_scores
    from sidrec.train.generator import load_generator
    model, _, _ = load_generator(out / "run")
    hist, items = torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.arange(1, 6)
    exact = model.item_log_probs(torch.zeros(2, dtype=torch.long), hist, 4)[:, 1:6]
    assert torch.allclose(prefix_scores(model, torch.zeros(2, dtype=torch.long), hist, items, 4), exact)
    lp = torch.log_softmax(model.digit_logits(hist), -1)
    codes = model.item_tok[1:6, :4] - model.digit_tok[:4, 0]
    brute = torch.stack([sum(lp[:, j, c[j]] for j in range(4)) for c in codes], 1)
    assert torch.allclose(exact, brute, atol=1e-5)


def test_an_ensemble_of_parallel_runs_ranks_exactly_as_its_exhaustive_beam():
    from sidrec.decoding.ensemble import Ensemble
    a, codes, trie = _model(seed=3)
    b, _, _ = _model(seed=4)
    b.item_tok = a.item_tok  # same IDs, other weights
    torch.manual_seed(4)
    with torch.no_grad():
        b.head_w.normal_(0, 0.3)
    ens = Ensemble([a, b], [0.25, 0.75])
    users, hist = torch.arange(3), torch.tensor([[0, 3, 5], [1, 2, 7], [9, 9, 11]])
    items, scores = generate(ens, users, hist, trie, k=10)
    beam_items, beam_scores = beam_search(ens.decode_step, ens.decode_start(users, hist), batch=3, trie=trie,
                                          offsets=a.vocab.offsets, beam=len(codes), k=10, reorder_fn=ens.decode_reorder)
    assert torch.equal(items, beam_items) and torch.allclose(scores, beam_scores, atol=1e-5)


def test_the_generated_command_explains_each_option(cli):
    """`sidrec train rpg --help` is made from the registry; each model option's help is its config field's comment."""
    code, stdout, _ = cli("train", "rpg", "--help")
    text = " ".join(stdout.replace("\u2502", " ").split())  # a wrapped cell continues past the box's rules
    assert code == 0 and "feed-forward width (default: 1024)" in text and "temperature of the digits" in text, text
    assert "--valid-users" in text and "--no-compile" in text and "--sequence-loss" in text, text


def test_a_negative_validation_sample_is_one_line(tmp_path, cli):
    """`--valid-users -5` is refused before training, in one line with exit code 2 (it was a numpy traceback)."""
    planted_run(tmp_path)
    code, stdout, stderr = cli("train", "rpg", str(tmp_path / "ds"), "--tokens", str(tmp_path / "tok"),
                               "--out", str(tmp_path / "run"), "--valid-users", "-5")
    assert code == 2 and "--valid-users -5" in stderr and "Traceback" not in stderr + stdout, stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()
