"""Decoding speed: sidrec's batched trie beam search vs Hugging Face generate(num_beams, prefix_allowed_tokens_fn)
on the same TIGER model, same users; also the share of identical top-10 lists.

    python experiments/bench/decoding_speed.py             # synthetic catalog, trained briefly
    python experiments/bench/decoding_speed.py --data DIR --tokens TOK --run RUN  # a trained run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sidrec.results import write_bench


def hf_generate(model, trie, users, hist, beam: int, k: int):
    """The slow reference: HF beam search with a Python prefix callback per beam per step."""
    from transformers import GenerationConfig

    ids, mask = model.encode_inputs(users, hist)
    offs = model.vocab.offsets
    L = model.id_length

    def allowed(batch_id, sent):
        prefix = sent.tolist()[1:]  # drop the decoder start token
        if len(prefix) >= L:
            return [1]  # EOS after a full ID
        codes = [t - offs[j] for j, t in enumerate(prefix)]
        return [c + offs[len(prefix)] for c in trie.allowed_next(codes)] or [1]

    gc = GenerationConfig(num_beams=beam, num_return_sequences=k, max_new_tokens=L, min_new_tokens=L, do_sample=False,
                          early_stopping=True, length_penalty=0.0, decoder_start_token_id=0, pad_token_id=0,
                          eos_token_id=1)
    if "_hf" not in model.__dict__:  # an HF T5 with the run's weights (the lean backbone has no generate)
        model.__dict__["_hf"] = model.to_hf().eval()
    out = model.__dict__["_hf"].generate(input_ids=ids, attention_mask=mask, generation_config=gc, prefix_allowed_tokens_fn=allowed)
    seq = out[:, 1:L + 1].cpu().numpy() - np.asarray(offs)[None, :]  # (B*k, L) codes
    return seq.reshape(len(users), k, L)


def codes_to_items(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    lut = {tuple(r): i + 1 for i, r in enumerate(table.tolist())}
    return np.array([[lut.get(tuple(c), -1) for c in row] for row in codes.tolist()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="trained TIGER run (default: train a small one on synthetic data)")
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--hf-users", type=int, default=64, help="users decoded by the slow HF reference")
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-decoding.jsonl")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench/decoding"))
    a = ap.parse_args()

    from sidrec.data.dataset import load_dataset
    from sidrec.decoding.beam import generate
    from sidrec.utils.seeding import pick_device
    from sidrec.train.tiger import load_tiger

    dev = pick_device(a.device)
    run = a.run
    if run is None:
        from sidrec.pipeline import demo_config, run_pipeline

        QUICK_DEMO = demo_config(quick=True)

        cfg = {**QUICK_DEMO, "data": {"source": "synthetic", "synthetic": {"n_users": 600, "n_items": 300}},
               "tokenize": {**QUICK_DEMO["tokenize"], "method": "rqvae", "codebook_size": 32, "cf_weight": 0.0,
                            "div_weight": 0.0},
               "tiger": {"preset": "tiger", "epochs": 2, "eval_every": 2}}
        run_pipeline(cfg, a.workdir, log=lambda s: None)
        run = a.workdir / "tiger"
    model, trie, conf = load_tiger(run, dev)
    ds = load_dataset(conf["dataset"])
    users, hist, _ = ds.eval_inputs("test", model.cfg.max_history)
    n = min(a.users, len(users))
    res = {"device": str(dev), "beam": a.beam, "run": str(run), "items": ds.n_items}
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    ours = {}
    for bs in (1, 64, 512):
        m = min(n, max(bs, 64 if bs == 1 else bs))
        u = torch.as_tensor(users[:m], device=dev)
        h = torch.as_tensor(hist[:m], device=dev)
        generate(model, u[:bs], h[:bs], trie, beam=a.beam, k=10)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, m, bs):
            generate(model, u[s:s + bs], h[s:s + bs], trie, beam=a.beam, k=10)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ours[bs] = m / (time.perf_counter() - t0)
    res["sidrec_users_per_s"] = {str(k): round(v, 1) for k, v in ours.items()}
    m = min(a.hf_users, n)
    u = torch.as_tensor(users[:m], device=dev)
    h = torch.as_tensor(hist[:m], device=dev)
    table = np.asarray(model.item_tok[1:].cpu()) - np.asarray(model.vocab.offsets)[None, :]
    hf_items = []
    for bs in (1, 64):
        t0 = time.perf_counter()
        got = []
        for s in range(0, m if bs > 1 else min(m, 16), bs):
            got.append(codes_to_items(hf_generate(model, trie, u[s:s + bs], h[s:s + bs], a.beam, 10), table))
        dt = time.perf_counter() - t0
        res[f"hf_users_per_s_batch{bs}"] = round((m if bs > 1 else min(m, 16)) / dt, 2)
        if bs == 64:
            hf_items = np.concatenate(got)
    ours_items = generate(model, u, h, trie, beam=a.beam, k=10)[0].cpu().numpy()
    same = (ours_items == hf_items).all(1)
    res["identical_top10_share"] = float(same.mean())
    res["identical_top10_sets_share"] = float(np.mean([set(x) == set(y) for x, y in zip(ours_items, hf_items)]))
    res["speedup_vs_hf"] = round(ours[64] / res["hf_users_per_s_batch64"], 1)
    res["speedup_vs_hf_batch1"] = round(ours[1] / res["hf_users_per_s_batch1"], 1)
    res["invalid_items_sidrec"] = int((ours_items <= 0).sum())
    print(json.dumps(res, indent=2))
    write_bench('decoding', res, a.results, variant=None)


if __name__ == "__main__":
    main()
