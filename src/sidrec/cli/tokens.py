"""`sidrec embed` and `sidrec tokenize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import console, print_table
from sidrec.cli.train import ConfigOpt, SetOpt
from sidrec.config import load_file, parse_overrides
from sidrec.data.dataset import load_dataset
from sidrec.embeddings.text import EmbedConfig, embed_dataset
from sidrec.errors import SidrecError
from sidrec.eval.checks import ranking_check
from sidrec.tokenizers.registry import tokenizer_spec
from sidrec.tokenizers.stage import tokenize as run_tokenize


def embed(data: Annotated[Path, typer.Argument(help="prepared dataset directory")],
          encoder: Annotated[str, typer.Option(help="tfidf | minilm | st:NAME_OR_PATH | hf-mean:PATH")] = "tfidf",
          out: Annotated[Path, typer.Option(help="embeddings directory")] = Path("runs/emb"),
          dim: Annotated[int, typer.Option(help="tfidf: SVD components")] = 256,
          batch_size: Annotated[int, typer.Option()] = 128,
          device: Annotated[str, typer.Option()] = "auto",
          seed: Annotated[int, typer.Option()] = 0):
    """Embed every item's text into EMB/item_emb.npy ((n_items + 1) x d, row 0 padding); cached by fingerprint.

    Example: sidrec embed data/yelp --encoder minilm --out runs/yelp-minilm
    """
    ds = load_dataset(data)
    emb = embed_dataset(ds, out, EmbedConfig(encoder=encoder, dim=dim, batch_size=batch_size, device=device, seed=seed),
                        log=console.print)
    console.print(f"wrote {out}/item_emb.npy {emb.shape}")


def tokenize(data: Annotated[Path, typer.Argument(help="prepared dataset directory")],
             method: Annotated[str, typer.Option(help="rqvae | letter | opq | rqkmeans | published")] = "rqvae",
             index: Annotated[Optional[Path], typer.Option(help="published: LETTER/LC-Rec *.index.json(.gz)")] = None,
             embeddings: Annotated[Path, typer.Option(help="embeddings directory (sidrec embed)")] = Path("runs/emb"),
             cf: Annotated[Optional[Path], typer.Option(help="SASRec run (item_emb.npy) for LETTER / CF overlap")] = None,
             out: Annotated[Path, typer.Option(help="tokens directory")] = Path("runs/tokens"),
             epochs: Annotated[Optional[int], typer.Option()] = None,
             n_levels: Annotated[Optional[int], typer.Option("--levels")] = None,
             codebook_size: Annotated[Optional[int], typer.Option()] = None,
             collision: Annotated[Optional[str], typer.Option(help="append (TIGER's suffix) | sinkhorn (LC-Rec's re-assignment) | sinkhorn-append (both) | none")] = None,
             seed: Annotated[Optional[int], typer.Option()] = None,
             device: Annotated[Optional[str], typer.Option()] = None,
             config: ConfigOpt = None, set_: SetOpt = None):
    """Turn items into semantic IDs; writes TOK/codes.npy, TOK/codes.parquet, the model, TOK/report.json and plots.

    Example: sidrec tokenize data/yelp --method letter --embeddings runs/yelp-minilm --cf runs/sasrec32 --out runs/yelp-letter
    """
    ds = load_dataset(data)
    ov = {}
    if config:
        for k, v in load_file(config).items():
            ov.update(v if isinstance(v, dict) else {k: v})
    ov.update(parse_overrides(set_))
    ov.update({k: v for k, v in dict(epochs=epochs, n_levels=n_levels, codebook_size=codebook_size,
                                     collision=collision, seed=seed, device=device).items() if v is not None})
    spec = tokenizer_spec(method)
    ov = spec.drop_inapplicable(ov)  # e.g. --epochs for a method that does not train by epochs
    if "index" in spec.inputs:
        if index is None:
            raise SidrecError(f"--method {method} needs --index FILE.index.json")
        ov["index"] = str(index)
    rep = run_tokenize(ds, out, method=method, embeddings=embeddings, cf_run=cf, overrides=ov, log=console.print,
                       check=ranking_check)
    if rep:  # torchrun: rank 0 reports
        show_report(rep, str(out))


def show_report(rep: dict, title: str) -> None:
    rows = [["metric", "value"], ["method", rep["method"]],
            ["codes used per level", " ".join(f"{u['used']}/{u['of']}" for u in rep["usage"])],
            ["perplexity per level", " ".join(f"{u['perplexity']:.0f}" for u in rep["usage"])],
            ["collision rate before", f"{rep['collision_rate_before']:.4f} (largest group "
                                      f"{rep['collisions_before']['largest_group']})"],
            ["collision rate after", f"{rep['collision_rate_after']:.4f}"],
            ["reconstruction mse", f"{rep['reconstruction_mse']:.5f}" if rep["reconstruction_mse"] is not None else "-"],
            ["cf overlap", f"{rep['cf_overlap']:.4f}" if rep["cf_overlap"] is not None else "-"],
            ["fit seconds", f"{rep['fit_seconds']:.1f}" + (f" ({rep['epochs_run']} epochs)" if rep.get("epochs_run")
                                                            else "")]]
    if rep.get("ranking_check"):
        rows.append(["ranking check R@10 / N@10",
                     f"{rep['ranking_check']['recall@10']:.4f} / {rep['ranking_check']['ndcg@10']:.4f}"])
    elif rep.get("cf_overlap") is not None:
        rows.append(["ranking check R@10 / N@10", "- (needs --cf to be a whole SASRec run of the code's dimension)"])
    print_table(rows, title)
    for w in rep.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
