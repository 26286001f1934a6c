"""`sidrec recommend`, `sidrec ensemble`, `sidrec serve`, `sidrec demo`, `sidrec run`, `sidrec results`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import console, print_table
from sidrec.config import load_file
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import metrics_table
from sidrec.pipeline import demo_config, run_pipeline
from sidrec.recipes import load_recipe, run_recipe
from sidrec.results import render
from sidrec.serving.batcher import ServeConfig
from sidrec.serving.recommender import load_recommender, read_new_items
from sidrec.train.ensemble import evaluate_ensemble


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
                       "(the decoded items' only), prefix (log P of their ID prefix, TIGER's rule) or dense (a "
                       "run with a dense head: prefix + its score of their text)")] = "blend",
              tau: Annotated[float, typer.Option(help="--new-rule blend/neighbours: kernel width in cosine")] = 0.1,
              history_weight: Annotated[float, typer.Option(
                  help="--new-rule blend: the share of probability the history's items pass (0 = neighbours)")] = 0.5,
              new_slots: Annotated[str, typer.Option(
                  help="cold start: compete (new items enter where they beat a decoded item) or reserve (they "
                       "always take their epsilon slots, after the best decoded items)")] = "compete",
              device: Annotated[str, typer.Option()] = "cpu"):
    """Top-K items, with titles, for a history of raw item ids (TIGER or VQ-Rec run).

    Examples:
      sidrec recommend demo-out/tiger --history i12 --history i40 --k 10
      sidrec recommend demo-out/tiger --history i12 --new-items new.csv --sample-temperature 1.5
      sidrec recommend runs/vq-sci --history B0001 --new-items new.csv --k 10
    """
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


def ensemble(runs: Annotated[list[Path], typer.Argument(help="two or more generator runs on the same data")],
             out: Annotated[Path, typer.Option(help="folder for metrics.json and the top lists")],
             weights: Annotated[str, typer.Option(help="comma-separated weight per run (default: equal)")] = "",
             beam: Annotated[int, typer.Option(help="beam width")] = 20,
             k: Annotated[str, typer.Option(help="cut-offs")] = "5,10,20",
             split: Annotated[str, typer.Option(help="valid or test")] = "test",
             decode_batch: Annotated[int, typer.Option(help="users per decoding batch")] = 256,
             device: Annotated[str, typer.Option()] = "auto",
             fuse: Annotated[str, typer.Option(help="levels: one beam search over the runs' averaged per-level "
                                                    "log-probabilities (runs on the same IDs); items: each run's "
                                                    "own beam, the union ranked by the runs' summed item "
                                                    "log-probabilities (any IDs); auto: levels when the IDs are "
                                                    "the same")] = "auto"):
    """Decode several generator runs as one and score it like a run's test: two seeds of a recipe (each ID level's
    next-token log-probabilities averaged, one trie-constrained beam search), or runs on different semantic IDs
    of the same data (RQ-VAE and LETTER tokens, say: each run decodes its own beam, every run scores the union).

    Example: sidrec ensemble runs/beauty-s0 runs/beauty-s1 --out runs/beauty-ens
    """
    try:
        ks = tuple(int(x) for x in k.split(",") if x)
        w = [float(x) for x in weights.split(",") if x] or None
    except ValueError:
        raise SidrecError(f"--k {k!r} / --weights {weights!r}: expected comma-separated numbers") from None
    res = evaluate_ensemble(runs, out, weights=w, beam=beam, ks=ks, decode_batch=decode_batch, device=device,
                            split=split, fuse=fuse)
    rows = {f"run {i + 1}": m[split] for i, m in enumerate(res["members"]) if m[split]}
    rows["ensemble"] = res[split]
    print_table(metrics_table(rows, ks[:2]), f"{split}: {len(runs)} runs and their ensemble (fused by {res['fuse']})")


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
          max_body: Annotated[int, typer.Option(help="request body limit in bytes, chunked bodies included (more: "
                                                     "413)")] = 1 << 20,
          max_depth: Annotated[int, typer.Option(help="JSON nesting depth of a request body (more: 422)")] = 16,
          max_new_items: Annotated[int, typer.Option(help="items per POST /items (more: 422)")] = 10_000,
          quiet: Annotated[bool, typer.Option("--quiet", help="no access log (one line per request)")] = False,
          log_format: Annotated[str, typer.Option(help="log lines as text or json (one object per line)")] = "text"):
    """Serve recommendations over HTTP (FastAPI): POST /recommend (concurrent requests batched into one
    decode), POST /items (cold start), GET /health, GET /metrics (Prometheus).

    Example: sidrec serve runs/vq-sci --port 8000
      curl -X POST localhost:8000/recommend -H 'content-type: application/json' -d '{"history": ["B0001"], "k": 5}'
    """
    try:
        import uvicorn

        from sidrec.serving.app import configure_logging, create_app
    except ImportError:
        raise SidrecError("serving needs the 'serve' extra: pip install 'sidrec[serve]'") from None

    for name, v in (("--max-batch", max_batch), ("--max-queue", max_queue), ("--max-history", max_history),
                    ("--max-k", max_k), ("--max-body", max_body), ("--max-depth", max_depth),
                    ("--max-new-items", max_new_items)):
        if v < 1:
            raise SidrecError(f"{name} {v}: must be at least 1")
    if max_wait_ms < 0 or queue_timeout <= 0:
        raise SidrecError("--max-wait-ms must be >= 0 and --queue-timeout > 0")
    if log_format not in ("text", "json"):
        raise SidrecError(f"--log-format {log_format!r}: choose text or json")

    cfg = ServeConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, queue_timeout_s=queue_timeout,
                      max_history=max_history, max_k=max_k, max_body_bytes=max_body, max_depth=max_depth,
                      max_new_items=max_new_items, access_log=not quiet)
    configure_logging(log_format, access=not quiet)
    app = create_app(run, device=device, cfg=cfg)
    rec = app.state.recommender
    logging.getLogger("sidrec.serve").info(
        f"sidrec serve: http://{host}:{port}  run {run} ({rec.kind}, {rec.n_items:,} items, device {device}); limits: "
        f"batch {max_batch}, queue {max_queue}, queue timeout {queue_timeout:g} s, history {max_history:,}, "
        f"k {max_k:,}, body {max_body:,} bytes, depth {max_depth}, new items {max_new_items:,}; access log "
        f"{'off' if quiet else 'on'}", extra={"path": str(run)})
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def demo(out: Annotated[Path, typer.Option(help="output directory")] = Path("demo-out"),
         seed: Annotated[int, typer.Option()] = 0,
         quick: Annotated[bool, typer.Option(help="a smaller catalog and fewer epochs (for a smoke test)")] = False):
    """The whole pipeline on the built-in synthetic catalog, on CPU, in a few minutes:
    tfidf embeddings -> SASRec (32-d) -> LETTER -> TIGER -> evaluation -> report.

    Example: sidrec demo --out demo-out
    """
    res = run_pipeline({**demo_config(quick), "seed": seed}, out, log=console.print)
    _show(res)


def run(config: Annotated[Path, typer.Argument(help="a recipe (TOML/YAML with a \\[recipe] section) or a plain "
                                                   "pipeline config")],
        seed: Annotated[Optional[list[int]], typer.Option("--seed", help="seed(s) to run (repeatable; default: "
                                                          "the recipe's seeds, a plain config's seed)")] = None,
        out: Annotated[Optional[Path], typer.Option(help="plain config: every stage under OUT/<stage> (default: "
                                                    "the config's 'out')")] = None,
        work: Annotated[Path, typer.Option(help="recipe: the shared stage cache, WORK/<stage>/<fingerprint>")]
        = Path("runs/work"),
        data_root: Annotated[Optional[Path], typer.Option(help="the folder the recipe's input paths are "
                                                          "relative to")] = None,
        results: Annotated[Optional[Path], typer.Option(help="recipe: the results folder (default: the "
                                                        "'results' folder beside the recipes folder)")] = None,
        smoke: Annotated[bool, typer.Option(help="a tiny sub-sample, one or two epochs, on the CPU: checks that "
                                            "the recipe runs; its rows go to WORK/smoke-results")] = False,
        until: Annotated[Optional[str], typer.Option(help="stop after this stage (data, embed, sasrec, tokenize, "
                                                     "...): make inputs on one machine, carry WORK, finish on "
                                                     "another")] = None):
    """Run a recipe (one table row: every stage cached by a fingerprint, resumable, one results row per seed)
    or a plain pipeline config.

    Examples:
      sidrec run experiments/recipes/reproduce/beauty-letter-tiger.toml --seed 0 --data-root datasets
      sidrec run experiments/recipes/reproduce/beauty-letter-tiger.toml --smoke --data-root datasets
      sidrec run src/sidrec/configs/demo.toml --out runs/demo
    Several seeds side by side, one GPU each (they share WORK; a stage one of them is computing is waited for):
      for s in 0 1; do CUDA_VISIBLE_DEVICES=$s sidrec run RECIPE --seed $s & done; wait
    """
    cfg = load_file(config)
    if "recipe" not in cfg:
        target = out or cfg.pop("out", None)
        if target is None:
            raise SidrecError(f"{config}: no 'out' key and no --out given")
        if seed:
            cfg["seed"] = seed[0]
        res = run_pipeline(cfg, Path(target), data_root=data_root, smoke=smoke, until=until, log=console.print)
        if not res.get("partial"):
            _show(res)
        return
    if out is not None:
        raise SidrecError("--out is for plain pipeline configs; a recipe's stages live in --work")
    cfg = load_recipe(config)
    for s in seed or cfg["recipe"]["seeds"]:
        rows = run_recipe(config, seed=s, work=work, data_root=data_root, results=results, smoke=smoke,
                          until=until, log=console.print)
        if not rows:
            continue
        head = ["row", "seed", "variant"] + [k for k in ("recall@10", "ndcg@10", "entropy@10") if k in rows[0]["metrics"]]
        print_table([head] + [[r["row"], str(r["seed"]), r.get("variant", "-")] +
                              [f"{r['metrics'][k]:.4f}" for k in head[3:]] for r in rows], "results")


def results(folder: Annotated[Path, typer.Argument(help="results folder (RESULTS/*.jsonl)")] = Path("experiments/results"),
            out: Annotated[Optional[Path], typer.Option(help="markdown file (default: RESULTS.md beside the folder)")]
            = None,
            about: Annotated[Optional[Path], typer.Option(help="tables.toml: each table's title and text "
                                                          "(default: tables.toml beside the folder)")] = None):
    """Render every results file into one markdown page with a plot per table.

    Example: sidrec results experiments/results     (writes experiments/RESULTS.md and experiments/plots/)
    """
    target = out or folder.parent / "RESULTS.md"
    render(folder, target, about=about or folder.parent / "tables.toml")
    console.print(f"wrote {target}")


def _show(res: dict) -> None:
    print_table(metrics_table(res["test"], (5, 10, 20)), "test (full ranking, leave-one-out)")
    for name, how in res.get("training", {}).items():
        console.print(f"{name}: {how}", highlight=False)
    if any("still improving" in t for t in res.get("training", {}).values()):
        console.print("note: a model cut while still improving scores below its level; these are short-budget "
                      "figures (full runs: experiments/RESULTS.md in the source)", highlight=False)
    console.print(f"report: {res['report']}")
