"""Collect every run under a work directory into one markdown summary (used by bench/gpu_all.sh)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = {"tiger-pub-beauty": "LETTER-TIGER paper: R@10 0.0672 N@10 0.0364",
         "tiger-pub-instruments": "LETTER-TIGER paper: R@10 0.1122 N@10 0.0831",
         "tiger-rqvae-yelp": "TIGER (LETTER's table): R@10 0.0331 N@10 0.0207",
         "tiger-letter-yelp": "LETTER-TIGER paper: R@10 0.0364 N@10 0.0227",
         "sasrec-beauty": "TIGER paper's SASRec: R@10 0.0605 N@10 0.0318"}


def main(w: Path) -> None:
    print("| run | R@5 | N@5 | R@10 | N@10 | best epoch / run | train s | s/epoch | samples/s | decode users/s | GPU MB | reference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in sorted(w.iterdir()):
        f = d / "metrics.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        t = m.get("test")
        if t is None or m.get("model") == "vqrec":
            continue
        print(f"| {d.name} | {t['recall@5']:.4f} | {t['ndcg@5']:.4f} | {t['recall@10']:.4f} | {t['ndcg@10']:.4f} | "
              f"{m.get('best_epoch')} / {m.get('epochs_run')} | {m.get('train_seconds')} | {m.get('seconds_per_epoch', '')} | "
              f"{m.get('samples_per_second', '')} | {m.get('test_decode_users_per_second', '')} | "
              f"{m.get('peak_gpu_memory_mb', '')} | {PAPER.get(d.name, '')} |")
    print()
    print("| tokens | used per level | collision before | after | CF overlap | recon MSE | fit s | ranking check R@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for d in sorted(w.iterdir()):
        f = d / "report.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        rc = (r.get("ranking_check") or {}).get("recall@10")
        print(f"| {d.name} | {r['usage_per_level']} | {r['collision_rate_before']:.4f} | {r['collision_rate_after']:.4f} | "
              f"{r['cf_overlap'] if r['cf_overlap'] is None else round(r['cf_overlap'], 4)} | "
              f"{r['reconstruction_mse'] if r['reconstruction_mse'] is None else round(r['reconstruction_mse'], 6)} | "
              f"{r['fit_seconds']} | {rc if rc is None else round(rc, 4)} |")
    dec = w / "decoding.json"
    if dec.is_file():
        print()
        print("decoding:", dec.read_text())
    for log in sorted((w / "logs").glob("*.log")):
        tail = log.read_text().splitlines()[-3:]
        if any("error" in x.lower() or "Traceback" in x for x in tail):
            print(f"\n{log.name}: " + " / ".join(tail))

    vq = [(d, json.loads((d / "metrics.json").read_text())) for d in sorted(w.iterdir()) if (d / "metrics.json").is_file()]
    vq = [(d, m) for d, m in vq if "recall@50" in (m.get("test") or {}) and (d.name.startswith(("vq-", "sasrec-")))]
    if vq:
        print()
        print("| run (VQ-Rec section) | ablation | R@10 | N@10 | R@50 | N@50 | train s | stages (best epoch / run) |")
        print("|---|---|---|---|---|---|---|---|")
        for d, m in vq:
            t = m["test"]
            st = "; ".join(f"{k} {v['best_epoch']}/{v['epochs_run']}" for k, v in m.get("stages", {}).items())
            print(f"| {d.name} | {m.get('ablation', m.get('model'))} | {t['recall@10']:.4f} | {t['ndcg@10']:.4f} | "
                  f"{t['recall@50']:.4f} | {t['ndcg@50']:.4f} | {m.get('train_seconds')} | {st} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
