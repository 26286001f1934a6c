"""`sidrec recommend`, `sidrec demo`, `sidrec run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import console, print_table
from sidrec.errors import SidrecError


def recommend(run: Annotated[Path, typer.Argument(help="trained TIGER run directory")],
              history: Annotated[list[str], typer.Option("--history", help="raw item ids, oldest first")] = [],  # noqa: B006
              k: Annotated[int, typer.Option(help="how many items")] = 10,
              beam: Annotated[int, typer.Option(help="beam width (>= k; TIGER)")] = 0,
              new_items: Annotated[Optional[Path], typer.Option(
                  help="cold start: csv/jsonl of new items (item_id, text[, title]) that get IDs from their text "
                       "and can be recommended at once")] = None,
              sample_temperature: Annotated[float, typer.Option(
                  help="generators: 0 = beam search; T > 0 samples k distinct items at decoding temperature T "
                       "(higher = more diverse; not the training loss's --temperature)")] = 0.0,
              seed: Annotated[int, typer.Option(help="seed of --sample-temperature sampling")] = 0,
              epsilon: Annotated[float, typer.Option(
                  help="generators, cold start: at most this share of the k slots for new items, ranked by "
                       "--new-rule (TIGER's epsilon; 0 = new items only through the trie)")] = 0.0,
              new_rule: Annotated[str, typer.Option(
                  help="generators, cold start: how new items are scored: blend (the decoded items' and the "
                       "history's items' probabilities passed to the new items near them in text), neighbours "
                       "(the decoded items' only) or prefix (log P of their ID prefix, TIGER's rule)")] = "blend",
              tau: Annotated[float, typer.Option(help="--new-rule blend/neighbours: kernel width in cosine")] = 0.1,
              history_weight: Annotated[float, typer.Option(
                  help="--new-rule blend: the share of probability the history's items pass (0 = neighbours)")] = 0.5,
              new_slots: Annotated[str, typer.Option(
                  help="cold start: compete (new items enter where they beat a decoded item) or reserve (they "
                       "always take their epsilon slots, after the best decoded items)")] = "compete",
              device: Annotated[str, typer.Option()] = "cpu"):
    """Top-K items, with titles, for a history of raw item ids (TIGER or VQ-Rec run).

    Examples:
      sidrec recommend runs/demo/tiger --history i12 --history i40 --k 10
      sidrec recommend runs/demo/tiger --history i12 --new-items new.csv --sample-temperature 1.5
      sidrec recommend runs/vq-sci --history B0001 --new-items new.csv --k 10
    """
    from sidrec.serving.recommender import load_recommender, read_new_items

    if sample_temperature < 0:
        raise SidrecError(f"--sample-temperature {sample_temperature}: must be 0 (beam search) or positive")
    rec = load_recommender(run, device=device)
    if new_items is not None:
        rec.add_items(*read_new_items(new_items))
    rows = rec.recommend(history, k=k, beam=beam, sample_temperature=sample_temperature, seed=seed, epsilon=epsilon,
                         new_rule=new_rule, tau=tau, history_weight=history_weight,
                         new_slots=new_slots)
    print_table([["rank", "item", "score", "title"]] +
                [[str(i + 1), r["item"] + (" (new)" if r.get("new") else ""), f"{r['score']:.3f}", r["title"][:70]]
                 for i, r in enumerate(rows)],
                f"top {k} for a history of {len(history)} items")


def serve(run: Annotated[Path, typer.Argument(help="trained TIGER or VQ-Rec run directory")],
          host: Annotated[str, typer.Option()] = "127.0.0.1",
          port: Annotated[int, typer.Option()] = 8000,
          device: Annotated[str, typer.Option()] = "cpu",
          max_batch: Annotated[int, typer.Option(help="concurrent /recommend requests decoded together")] = 64,
          max_wait_ms: Annotated[float, typer.Option(help="how long a batch waits for more requests (0: it takes "
                                                          "those queued during the previous decode)")] = 0.0,
          max_queue: Annotated[int, typer.Option(help="waiting requests; more answer 503 at once")] = 256,
          queue_timeout: Annotated[float, typer.Option(help="seconds a request may wait for its decode (then 503)")] = 10.0,
          max_history: Annotated[int, typer.Option(help="items per request history (more: 422)")] = 10_000,
          max_k: Annotated[int, typer.Option(help="largest k / beam per request")] = 1_000,
          max_body: Annotated[int, typer.Option(help="request body limit in bytes (more: 413)")] = 1 << 20):
    """Serve recommendations over HTTP (FastAPI): POST /recommend (concurrent requests batched into one
    decode), POST /items (cold start), GET /health, GET /metrics (Prometheus).

    Example: sidrec serve runs/vq-sci --port 8000
      curl -X POST localhost:8000/recommend -H 'content-type: application/json' -d '{"history": ["B0001"], "k": 5}'
    """
    try:
        import uvicorn

        from sidrec.serving.app import create_app
    except ImportError:
        raise SidrecError("serving needs the 'serve' extra: pip install 'sidrec[serve]'") from None

    from sidrec.serving.batcher import ServeConfig

    for name, v in (("--max-batch", max_batch), ("--max-queue", max_queue), ("--max-history", max_history),
                    ("--max-k", max_k), ("--max-body", max_body)):
        if v < 1:
            raise SidrecError(f"{name} {v}: must be at least 1")
    if max_wait_ms < 0 or queue_timeout <= 0:
        raise SidrecError("--max-wait-ms must be >= 0 and --queue-timeout > 0")
    cfg = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, queue_timeout_s=queue_timeout,
                      max_history=max_history, max_k=max_k, max_body_bytes=max_body)
    uvicorn.run(create_app(run, device=device, cfg=cfg), host=host, port=port, log_level="warning")


def demo(out: Annotated[Path, typer.Option(help="output directory")] = Path("demo-out"),
         seed: Annotated[int, typer.Option()] = 0,
         quick: Annotated[bool, typer.Option(help="a smaller catalog and fewer epochs (for a smoke test)")] = False):
    """The whole pipeline on the built-in synthetic catalog, on CPU, in a few minutes:
    tfidf embeddings -> SASRec (32-d) -> LETTER -> TIGER -> evaluation -> report.

    Example: sidrec demo --out demo-out
    """
    from sidrec.pipeline import demo_config, run_pipeline

    res = run_pipeline({**demo_config(quick), "seed": seed}, out, log=console.print)
    _show(res)


def run(config: Annotated[Path, typer.Argument(help="pipeline config (TOML or YAML)")],
        out: Annotated[Optional[Path], typer.Option(help="output directory (default: the config's 'out')")] = None):
    """Run a whole pipeline from a config file; each stage is cached by a fingerprint of its inputs and config.

    Example: sidrec run src/sidrec/configs/demo.toml --out runs/demo
    """
    from sidrec.config import load_file
    from sidrec.pipeline import run_pipeline

    cfg = load_file(config)
    target = out or cfg.pop("out", None)
    if target is None:
        raise SidrecError(f"{config}: no 'out' key and no --out given")
    _show(run_pipeline(cfg, Path(target), log=console.print))


def _show(res: dict) -> None:
    from sidrec.eval.evaluate import metrics_table

    print_table(metrics_table(res["test"], (5, 10, 20)), "test (full ranking, leave-one-out)")
    console.print(f"report: {res['report']}")
