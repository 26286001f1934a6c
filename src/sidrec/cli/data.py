"""`sidrec data download|prepare|stats`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import console, print_table
from sidrec.config import parse_overrides
from sidrec.data.dataset import load_dataset
from sidrec.data.download import DATASETS
from sidrec.data.download import download as dl
from sidrec.data.prepare import PrepareConfig
from sidrec.data.prepare import prepare as prep
from sidrec.data.sources import read_source

app = typer.Typer(help="Get, prepare and inspect datasets.", no_args_is_help=True)


@app.command()
def download(name: Annotated[str, typer.Argument(help="dataset name, e.g. amazon2014-beauty, ml-1m")],
             out: Annotated[Optional[Path], typer.Option(help="directory (default: the cache, $SIDREC_CACHE)")] = None,
             list_: Annotated[bool, typer.Option("--list", help="list the known datasets")] = False):
    """Download a public dataset into the cache (resumes partial files, checks sha256 where known).

    Example: sidrec data download amazon2014-beauty
    """
    if list_:
        for k, v in DATASETS.items():
            typer.echo(f"{k:28s} {v[0].source:14s} {' '.join(r.url for r in v)}")
        return
    for p in dl(name, out):
        typer.echo(str(p))


@app.command()
def prepare(source: Annotated[str, typer.Argument(help="amazon2014 amazon2018 amazon2023 s3rec letter unisrec "
                                                       "recbole movielens yelp online-retail csv parquet synthetic")],
            input: Annotated[Optional[list[Path]], typer.Option("--input", "-i", help="input file(s), repeatable")] = None,
            out: Annotated[Path, typer.Option(help="dataset directory to write")] = Path("data/prepared"),
            min_count: Annotated[int, typer.Option(help="k-core threshold (fixed point)")] = 5,
            max_history: Annotated[int, typer.Option(help="history cut used by models")] = 20,
            text_fields: Annotated[str, typer.Option(help="item fields joined into the item text")] =
            "title,brand,categories,description",
            columns: Annotated[str, typer.Option(help="csv/parquet column mapping, e.g. user=uid,item=iid,time=ts")] = "",
            dedup: Annotated[Optional[bool], typer.Option("--dedup/--no-dedup", help="collapse repeated (user, item)")] = None,
            synthetic: Annotated[str, typer.Option(help="synthetic options, e.g. n_users=500,n_items=200,seed=1")] = "",
            seed: Annotated[Optional[int], typer.Option(help="seed (synthetic source)")] = None):
    """Read a source into the canonical schema, k-core, split leave-one-out, write DIR + DIR/stats.json.

    Example: sidrec data prepare s3rec --input ../shared/data/amazon2014-beauty/s3rec-format/Beauty.txt.gz --out data/beauty
    """
    syn = parse_overrides([s for s in synthetic.split(",") if s])
    if seed is not None:
        syn["seed"] = seed
    cols = parse_overrides([s for s in columns.split(",") if s])
    raw = read_source(source, list(input or []), columns=cols, synthetic=syn)
    cfg = PrepareConfig(min_count=min_count, max_history=max_history,
                        text_fields=tuple(f for f in text_fields.split(",") if f), dedup=dedup)
    stats = prep(raw, out, cfg, source=source)
    _show(stats, out)


def _show(stats: dict, path: Path) -> None:
    rows = [["field", "value"], ["dataset", str(path)], ["users", f"{stats['users']:,}"],
            ["items", f"{stats['items']:,}"], ["interactions", f"{stats['interactions']:,}"],
            ["avg seq len", f"{stats['avg_seq_len']:.2f}"],
            ["items with text", f"{stats['items_with_text']:,} / {stats['items']:,}"]]
    rows += [[f"filtered: {k}", f"{v:,}"] for k, v in stats["filtered"].items()]
    print_table(rows)


@app.command()
def stats(dataset: Annotated[Path, typer.Argument(help="prepared dataset directory")],
          json_: Annotated[bool, typer.Option("--json", help="print the raw stats.json")] = False):
    """Show a prepared dataset's statistics.

    Example: sidrec data stats data/beauty
    """
    ds = load_dataset(dataset)
    if json_:
        typer.echo(json.dumps(ds.stats, indent=2))
    else:
        _show(ds.stats, dataset)
    console.print(f"fingerprint {ds.fingerprint}")
