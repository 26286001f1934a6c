"""LC-Rec decoding speed: sidrec's batched trie beam search over the KV cache vs Hugging Face
``generate(num_beams, prefix_allowed_tokens_fn)`` on the same causal LM, the same prompts; also the share of
identical top-k lists (equal up to ties: the test suite checks exact equality on a small model).

    python experiments/bench/lcrec_decoding_speed.py                    # tiny-qwen2, CPU
    python experiments/bench/lcrec_decoding_speed.py --model smollm2-135m --users 256                # the pretrained LLM

The model is untrained (decoding cost does not depend on the weights); the catalog is ``--items`` random
3-level IDs over 256 codes per level (Beauty's shape: 12k items), histories of ``--history`` items.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sidrec.results import write_bench


def hf_lists(model, trie, hist, beam: int, k: int) -> np.ndarray:
    """HF beam search with a Python prefix callback per beam per step (the reference)."""
    ids, mask = model._prompt(hist)
    offs, L = model.vocab.offsets, model.id_length
    P = ids.shape[1]

    def allowed(batch_id, sent):
        codes = [t - offs[j] for j, t in enumerate(sent.tolist()[P:])]
        return [c + offs[len(codes)] for c in trie.allowed_next(codes)] if len(codes) < L else [0]

    out = model.lm.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=L, num_beams=beam,
                            num_return_sequences=k, do_sample=False, length_penalty=0.0, pad_token_id=0,
                            eos_token_id=None, prefix_allowed_tokens_fn=allowed, output_scores=True,
                            return_dict_in_generate=True)
    seq = out.sequences[:, P:P + L].cpu().numpy() - np.asarray(offs)[None, :]
    return seq.reshape(len(hist), k, L), out.sequences_scores.float().cpu().numpy().reshape(len(hist), k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-qwen2")
    ap.add_argument("--items", type=int, default=12_000)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--hf-users", type=int, default=16)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-lcrec-decoding.jsonl")
    a = ap.parse_args()

    from sidrec.decoding.beam import generate
    from sidrec.decoding.trie import Trie
    from sidrec.models.lcrec import LCRec, LCRecConfig
    from sidrec.utils.seeding import pick_device

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 256, (a.items * 2, 3)), axis=0)[:a.items]
    codes = codes[rng.permutation(len(codes))]
    dev = pick_device(a.device)
    model = LCRec(LCRecConfig(model=a.model, max_history=a.history, dropout=0.0), [256] * 3, codes).to(dev).eval()
    trie = Trie(codes, [256] * 3).to(dev)
    hist = torch.as_tensor(rng.integers(1, len(codes) + 1, (a.users, a.history)), device=dev)
    hist[::3, : a.history // 2] = 0  # a third of the users with short (left-padded) histories
    users = torch.arange(a.users, device=dev)
    res = {"model": a.model, "device": str(dev), "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None,
           "items": len(codes), "history": a.history, "beam": a.beam,
           "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
    with torch.no_grad():
        generate(model, users[:4], hist[:4], trie, beam=a.beam, k=10)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        got = [generate(model, users[s:s + a.batch], hist[s:s + a.batch], trie, beam=a.beam, k=10)
               for s in range(0, a.users, a.batch)]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        res["sidrec_users_per_s"] = round(a.users / (time.perf_counter() - t0), 2)
        ours = torch.cat([g[0] for g in got]).cpu().numpy()
        our_scores = torch.cat([g[1] for g in got]).float().cpu().numpy()
        m = min(a.hf_users, a.users)
        t0 = time.perf_counter()
        ref = [hf_lists(model, trie, hist[s:s + 8], a.beam, 10) for s in range(0, m, 8)]
        hf, hf_scores = np.concatenate([r[0] for r in ref]), np.concatenate([r[1] for r in ref])
        res["hf_generate_users_per_s"] = round(m / (time.perf_counter() - t0), 2)
    from decoding import codes_to_items  # experiments/bench/decoding_speed.py (this folder is on the path)

    hf_items = codes_to_items(hf, codes)
    res["identical_top10_share"] = float((hf_items == ours[:m]).all(1).mean())
    # lists may differ only where scores tie (untrained ID rows score almost alike): the largest score gap
    res["max_top10_score_gap"] = float(np.abs(hf_scores - our_scores[:m]).max())  # length_penalty 0: sums
    res["speedup"] = round(res["sidrec_users_per_s"] / res["hf_generate_users_per_s"], 1)
    print(json.dumps(res, indent=2))
    write_bench('lcrec-decoding', res, a.results, variant=None)


if __name__ == "__main__":
    main()
