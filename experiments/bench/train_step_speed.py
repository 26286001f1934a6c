"""Old vs new TIGER training step, side by side in one process on one card.

Beauty shapes: the prepared dataset and LETTER's released IDs (4 levels + collision level), history 20.
- old: the sidrec <= 0.1 step: HF ``T5ForConditionalGeneration``, eager, batches built on the host and
  copied per step, ``loss.item()`` every step, AdamW (foreach), ``clip_grad_norm_``;
- new: the lean T5 backbone (``models.encdec``) under ``torch.compile``, batches gathered on the device
  from device-resident tensors, loss kept on the device, fused AdamW;
- new-eager: the new step without ``torch.compile`` (what the compiler contributes);
- new-t5-attn-dropout: the new step with T5's dropout on attention probabilities (the presets' default is
  none: with it SDPA cannot use its fused kernels and materialises the attention matrix);
- new-bucketed: the trainer's real epoch: the new step over ``PrefixBatches`` (4 history widths, one
  compiled graph each, CUDA graphs (compile mode reduce-overhead, the trainer's default), remainder
  batches eager), timed over one full epoch after two warm-up batches per width; samples/s = training
  samples / epoch seconds. (experiments/bench/compile_modes.py compares the compile modes on this epoch.)
Both start from the same weights; the loss of one fixed batch is compared (eval mode, float32).
Then a kernel profile of the new step and, with ``--epoch``, end-to-end epochs of ``train_tiger``
(epoch 1 includes compilation) with decoded-NDCG validation and with loss validation.

  python experiments/bench/train_step_speed.py --data DIR --tokens TOK --batch 256 1024 4096  --epoch
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from sidrec.data.dataset import load_dataset
from sidrec.models.tiger import PRESETS, TIGER, TIGERConfig, Vocab, ranking_guided_loss
from sidrec.tokenizers.base import SemanticIDs
from sidrec.results import write_bench


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def old_loss(model: TIGER, hf, users, hist, target):
    ids, mask = model.encode_inputs(users, hist)
    labels = model.item_tok[target]
    dec_in = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
    return ranking_guided_loss(hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_in).logits, labels)


def time_variant(name, model, params, loss_fn, batches, *, dev, warmup, steps, fused):
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True if fused else None)
    amp = dev.type == "cuda"
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model.train()
    tc = time.time()
    total = None
    for i in range(warmup + steps):
        if i == warmup:
            sync(dev)
            t0 = time.time()
        b = next(batches)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(*b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=fused or None)
        opt.step()
        if name == "old":
            total = (total or 0.0) + loss.item()  # the old loop's per-step host sync
        else:
            total = loss.detach() if total is None else total + loss.detach()
        if i == 0:
            first = time.time() - tc
    sync(dev)
    dt = time.time() - t0
    return {"seconds_per_step": dt / steps, "first_step_seconds": round(first, 2),
            "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None}


def bucketed_epoch(base, cfg, users, hist, target, B, dev, buckets=4, mode="reduce-overhead") -> dict:
    from sidrec.train.loop import Compiled
    from sidrec.train.tiger import PrefixBatches

    pb = PrefixBatches(users, hist, target, batch_size=B, buckets=buckets, seed=0, device=dev)
    m = TIGER(cfg, base.vocab, base.item_tok[1:].cpu().numpy() - np.asarray(base.vocab.offsets)).to(dev)
    m.load_state_dict(base.state_dict())
    m.train()
    fn = Compiled(m, print, B, mode)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True if dev.type == "cuda" else None)
    amp = dev.type == "cuda"

    def step(b):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = fn(*b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.detach()

    tc = time.time()
    for _ in range(2):  # one batch of each shape, twice: compiles each width's graph, records its CUDA graph
        warmed = set()
        for b in pb(0):
            if tuple(b[1].shape) not in warmed:
                warmed.add(tuple(b[1].shape))
                step(b)
    sync(dev)
    compile_s = time.time() - tc
    t0 = time.time()
    total = sum(step(b) for b in pb(1))
    sync(dev)
    dt = time.time() - t0
    return {"bucketed_samples_per_second": round(pb.n / dt, 1), "bucketed_widths": pb.widths,
            "bucketed_padding_share": round(pb.padded_share, 3), "bucketed_warmup_seconds": round(compile_s, 1),
            "bucketed_epoch_seconds": round(dt, 2), "bucketed_epoch_loss": round(float(total) / pb.steps, 4)}


def profile_new(step, dev, steps=20) -> dict:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    for _ in range(3):
        step()
    sync(dev)
    with profile(activities=acts) as prof:
        t0 = time.time()
        for _ in range(steps):
            step()
        sync(dev)
        wall = time.time() - t0
    ev = prof.key_averages()
    if dev.type != "cuda":
        return {"wall_ms_per_step": 1e3 * wall / steps}
    kern = sum(e.self_device_time_total for e in ev if e.device_type.name == "CUDA") / 1e3 / steps  # ms
    launches = sum(e.count for e in ev if e.device_type.name == "CUDA") / steps
    top = sorted((e for e in ev if e.device_type.name == "CUDA"), key=lambda e: -e.self_device_time_total)[:8]
    return {"wall_ms_per_step": round(1e3 * wall / steps, 3), "kernel_ms_per_step": round(kern, 3),
            "gpu_busy_share": round(kern / (1e3 * wall / steps), 3), "kernels_per_step": round(launches, 1),
            "top_kernels": [{"name": e.key[:90], "ms_per_step": round(e.self_device_time_total / 1e3 / steps, 3)}
                            for e in top]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--epoch", action="store_true", help="also time end-to-end epochs of train_tiger")
    ap.add_argument("--epoch-batch", type=int, default=1024)
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-train-step.jsonl")
    ap.add_argument("--skip-attn-dropout", action="store_true", help="skip the new + attention-dropout variant")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    ds = load_dataset(a.data)
    ids = SemanticIDs(a.tokens)
    cfg = TIGERConfig(preset="tiger", **{**PRESETS["tiger"], "max_history": a.history})
    hist, target = ds.train_prefix_samples(a.history)
    users = np.repeat(np.arange(1, ds.n_users + 1), np.clip(np.diff(ds.offsets) - 3, 0, None))
    n = len(target)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    res = {"gpu": gpu, "torch": torch.__version__, "dataset": str(a.data), "samples": n, "history": a.history,
           "id_length": int(ids.codes.shape[1]), "runs": []}

    base = TIGER(cfg, Vocab(ids.level_sizes, 0), ids.codes).to(dev)
    # same function: one fixed batch, eval mode, float32
    hf = base.to_hf()
    with torch.no_grad():
        b = [torch.as_tensor(x[:256], device=dev) for x in (users, hist, target)]
        base.eval(), hf.eval()
        lo, ln = old_loss(base, hf, *b).item(), base(*b).item()
    res["loss_check"] = {"old": lo, "new": ln, "abs_diff": abs(lo - ln)}
    d_users, d_hist, d_target = (torch.as_tensor(x, device=dev) for x in (users, hist, target))

    for B in a.batch:
        rng = np.random.default_rng(B)

        def host_batches():  # the old loop: numpy gather on the host, copy per step
            while True:
                i = rng.integers(0, n, B)
                yield tuple(torch.from_numpy(x[i]).to(dev, non_blocking=True) for x in (users, hist, target))

        def device_batches():
            while True:
                i = torch.randint(0, n, (B,), device=dev)
                yield d_users[i], d_hist[i], d_target[i]

        row = {"gpu": gpu, "batch_size": B}
        old_model = TIGER(cfg, base.vocab, ids.codes).to(dev)
        old_model.load_state_dict(base.state_dict())
        hf_old = old_model.to_hf()
        r = time_variant("old", hf_old, list(hf_old.parameters()), lambda *x: old_loss(old_model, hf_old, *x),
                         host_batches(), dev=dev, warmup=a.warmup, steps=a.steps, fused=False)
        row.update(old_samples_per_second=round(B / r["seconds_per_step"], 1), old_peak_memory_mb=r["peak_memory_mb"])
        del hf_old, old_model
        variants = [("new_eager", False, cfg.attn_dropout), ("new_t5_attn_dropout", True, None),
                    ("new", True, cfg.attn_dropout)]
        for name, comp, ad in [v for v in variants if not (a.skip_attn_dropout and v[0] == "new_t5_attn_dropout")]:
            m = TIGER(replace(cfg, attn_dropout=ad), base.vocab, ids.codes).to(dev)
            m.load_state_dict(base.state_dict())
            fn = torch.compile(m, dynamic=False) if comp else m
            r = time_variant(name, m, list(m.parameters()), fn, device_batches(), dev=dev,
                             warmup=a.warmup, steps=a.steps, fused=dev.type == "cuda")
            row[f"{name}_samples_per_second"] = round(B / r["seconds_per_step"], 1)
            row[f"{name}_first_step_seconds"] = r["first_step_seconds"]
            row["peak_memory_mb" if name == "new" else f"{name}_peak_memory_mb"] = r["peak_memory_mb"]
            if name == "new" and B == a.batch[min(1, len(a.batch) - 1)]:
                opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True if dev.type == "cuda" else None)
                batches = device_batches()

                def step():
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                        loss = fn(*next(batches))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
                    opt.step()

                res["profile"] = {"batch_size": B, **profile_new(step, dev)}
            del m, fn
        row.update(bucketed_epoch(base, cfg, users, hist, target, B, dev))
        row["speedup"] = round(row["new_samples_per_second"] / row["old_samples_per_second"], 2)
        row["bucketed_speedup"] = round(row["bucketed_samples_per_second"] / row["old_samples_per_second"], 2)
        res["runs"].append(row)
        print(json.dumps(row), flush=True)

    if a.epoch:
        from sidrec.train.loop import TrainConfig
        from sidrec.train.tiger import train_tiger

        res["epochs"] = []
        for select, vu, nb in (("loss", 0, 4), ("loss", 0, 1), ("ndcg@10", 4096, 4)):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.time()
                mt = train_tiger(ds, a.tokens, tmp, replace(cfg), TrainConfig(
                    epochs=2, batch_size=a.epoch_batch, learning_rate=1e-3, lr_scale="sqrt", schedule="cosine",
                    warmup_steps=1000, eval_every=1, select_metric=select, seed=0, length_buckets=nb), valid_users=vu,
                    decode_batch=512, log=lambda s: None)
                hist_ = [json.loads(x) for x in open(f"{tmp}/log.jsonl")]
                res["epochs"].append({"select": select, "valid_users": vu or ds.n_users, "batch_size": a.epoch_batch,
                                      "length_buckets": nb,
                                      "epoch1_train_seconds": round(hist_[0]["seconds"], 2),
                                      "epoch2_train_seconds": round(hist_[1]["seconds"], 2),
                                      "validate_seconds": hist_[1]["validate_seconds"],
                                      "epoch2_end_to_end_seconds": round(hist_[1]["seconds"] + hist_[1]["validate_seconds"], 2),
                                      "test_decode_users_per_second": mt["test_decode_users_per_second"],
                                      "total_seconds": round(time.time() - t0, 1)})
                print(json.dumps(res["epochs"][-1]), flush=True)
    write_bench('train-step', res, a.results, variant=None)
    print("batch | old samples/s | new samples/s | new eager | new + attn dropout | speed-up | bucketed epoch | "
          "speed-up | peak MB")
    for r in res["runs"]:
        print(f"{r['batch_size']} | {r['old_samples_per_second']:.0f} | {r['new_samples_per_second']:.0f} | "
              f"{r['new_eager_samples_per_second']:.0f} | {r.get('new_t5_attn_dropout_samples_per_second', float('nan')):.0f} | "
              f"{r['speedup']}x | {r['bucketed_samples_per_second']:.0f} | {r['bucketed_speedup']}x | "
              f"{r['peak_memory_mb']}")
    print("loss check", res["loss_check"], "profile", {k: v for k, v in res.get("profile", {}).items() if k != "top_kernels"})


if __name__ == "__main__":
    main()
