"""The `sidrec` command line (typer + rich). The only place that maps user input to typed configs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from sidrec.cli import coldstart as coldstart_cmd
from sidrec.cli import config_cmd
from sidrec.cli import data as data_cmd
from sidrec.cli import gen as gen_cmd
from sidrec.cli import tokens as tokens_cmd
from sidrec.cli import train as train_cmd
from sidrec.cli.common import console
from sidrec.data.dataset import load_dataset
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, evaluate_predictions, write_metrics
from sidrec.tokenizers.registry import TOKENIZERS
from sidrec.train.generator import distributed_trainers
from sidrec.utils.dist import abandon, setup
from sidrec.utils.log import use_rich
from sidrec.utils.threads import configure_threads

app = typer.Typer(name="sidrec", help="Generative recommendation with semantic item IDs.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(data_cmd.app, name="data")
app.add_typer(train_cmd.app, name="train")
app.add_typer(config_cmd.app, name="config")
app.command()(tokens_cmd.embed)
app.command()(tokens_cmd.tokenize)
app.command("evaluate-coldstart")(coldstart_cmd.evaluate_coldstart)
app.command()(gen_cmd.recommend)
app.command()(gen_cmd.ensemble)
app.command()(gen_cmd.serve)
app.command()(gen_cmd.demo)
app.command()(gen_cmd.run)
app.command()(gen_cmd.results)


@app.callback()
def _global(threads: Annotated[Optional[int], typer.Option(
        "--threads", help="CPU threads for torch (default: OMP_NUM_THREADS, else the cores not already busy)")] = None):
    """Generative recommendation with semantic item IDs."""
    if threads is not None and threads < 1:
        raise SidrecError(f"--threads {threads}: must be at least 1")
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:  # torchrun: distributed training for the trainers that support it
        args = [a for a in sys.argv[1:] if not a.startswith("-")]
        argv = sys.argv[1:]
        method = next((a.split("=", 1)[1] for a in argv if a.startswith("--method=")),
                      argv[argv.index("--method") + 1] if "--method" in argv[:-1] else "rqvae")  # tokenize's default

        tokenize_ok = args[:1] == ["tokenize"] and method in TOKENIZERS and TOKENIZERS[method].distributed
        trainers = distributed_trainers()
        if not tokenize_ok and (args[:1] != ["train"] or len(args) < 2 or args[1] not in trainers):
            raise SidrecError(f"started as one of {world} processes (torchrun): only `sidrec train "
                              f"{'|'.join(sorted(trainers))}` and `sidrec tokenize --method "
                              f"{'|'.join(t for t, sp in TOKENIZERS.items() if sp.distributed)}` "
                              f"run distributed; run this command once")

        setup()
    configure_threads(threads)

    use_rich(console)  # library progress lines ("sidrec" logger) print through rich


@app.command()
def evaluate(data: Annotated[Path, typer.Option(help="prepared dataset directory")],
             predictions: Annotated[Path, typer.Option(help="jsonl/parquet: user + ranked raw item ids")],
             k: Annotated[str, typer.Option(help="cut-offs")] = "5,10,20,50",
             split: Annotated[str, typer.Option(help="valid or test")] = "test",
             exclude_history: Annotated[bool, typer.Option(help="mask each user's history items")] = False,
             out: Annotated[Optional[Path], typer.Option(help="write the metrics JSON here")] = None):
    """Score any model's ranked lists with the full-ranking leave-one-out protocol.

    Example: sidrec evaluate --data data/beauty --predictions preds.jsonl --k 5,10 --out metrics.json
    """
    try:
        ks = tuple(int(x) for x in k.split(",") if x)
    except ValueError:
        raise SidrecError(f"--k {k!r}: expected comma-separated integers") from None
    ds = load_dataset(data)
    m = evaluate_predictions(predictions, ds, split, EvalConfig(ks=ks, exclude_history=exclude_history))
    if out:
        write_metrics(out, m)
    for key in ("unknown_users", "unknown_items", "duplicate_items", "users_without_predictions"):
        if m["protocol"].get(key):
            console.print(f"[yellow]note[/]: {m['protocol'][key]} {key.replace('_', ' ')} (counted as misses / ignored)")
    train_cmd.show_metrics({predictions.name: m}, f"{split}, {m['users']:,} users")
    typer.echo(json.dumps({k2: v for k2, v in m.items() if k2 != "protocol"}))


def main() -> None:
    """Console entry point: user mistakes become one line on stderr and exit code 2."""
    train_cmd.add_generator_commands()  # generators registered after import get their `sidrec train NAME` too
    try:
        app()
    except SidrecError as e:
        abandon()
        console.print(f"[bold red]error[/]: {escape(str(e))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        abandon()
        console.print("interrupted; rerun the same command to resume from the last checkpoint")
        sys.exit(130)
    except SystemExit as e:
        if e.code not in (None, 0):
            abandon()
        raise
    except BaseException:
        abandon()  # under torchrun the other ranks fail on their next collective rather than this one hanging
        raise
