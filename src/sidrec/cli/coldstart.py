"""`sidrec evaluate-coldstart`: TIGER's cold-start protocol for any model whose cold-start spec is registered
(``sidrec.train.coldstart``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import console, layered, print_table
from sidrec.cli.train import ConfigOpt, SetOpt
from sidrec.data.dataset import load_dataset
from sidrec.embeddings.text import EmbedConfig
from sidrec.errors import SidrecError
from sidrec.eval.coldstart import ColdStartConfig
from sidrec.eval.coldstart import evaluate_coldstart as run
from sidrec.tokenizers.registry import TOKENIZERS, tokenizer_spec
from sidrec.train.coldstart import coldstart_models, coldstart_spec


def evaluate_coldstart(data: Annotated[Path, typer.Argument(help="prepared dataset directory (with item text)")],
                       out: Annotated[Path, typer.Option(help="output directory (data, emb, tok, run, coldstart.json)")]
                       = Path("runs/coldstart"),
                       holdout: Annotated[float, typer.Option(help="share of the test targets' items held out")] = 0.05,
                       epsilon: Annotated[Optional[list[float]], typer.Option(
                           "--epsilon", help="max share of new items in the top K (repeatable; TIGER's epsilon)")] = None,
                       k: Annotated[int, typer.Option(help="K of Recall@K / NDCG@K")] = 10,
                       beam: Annotated[int, typer.Option(help="beam width (the decoded items the neighbours and blend "
                                                              "rules spread from)")] = 20,
                       encoder: Annotated[str, typer.Option(help="text encoder: minilm, tfidf, st:NAME, hf-mean:PATH")]
                       = "minilm",
                       embeddings: Annotated[Optional[Path], typer.Option(
                           help="the whole catalog's embeddings made beforehand (`sidrec embed`, a pretrained "
                                "encoder): used instead of embedding here")] = None,
                       method: Annotated[str, typer.Option(help="tokenizer fitted on the seen items' text: rqvae | "
                                                                "rqkmeans | opq")] = "rqvae",
                       levels: Annotated[Optional[int], typer.Option(help="tokenizer levels")] = None,
                       codebook_size: Annotated[Optional[int], typer.Option(help="tokenizer codebook size")] = None,
                       preset: Annotated[str, typer.Option(help="TIGER preset (tiger | letter | strong | small)")] = "tiger",
                       epochs: Annotated[Optional[int], typer.Option()] = None,
                       batch_size: Annotated[Optional[int], typer.Option()] = None,
                       seed: Annotated[int, typer.Option()] = 0,
                       device: Annotated[str, typer.Option()] = "auto",
                       prefix_levels: Annotated[Optional[list[int]], typer.Option(
                           "--prefix-levels", help="ID prefix length(s) new items are scored by (repeatable; "
                                                   "default: every code level, TIGER's rule)")] = None,
                       rule: Annotated[Optional[list[str]], typer.Option(
                           "--rule", help="how the generator scores new items (repeatable): prefix (log P of their ID "
                                          "prefix, TIGER's rule), neighbours (the decoded items' probabilities passed "
                                          "to the new items near them in text), blend (the history's items pass "
                                          "half of it; default: these three) or dense (a TIGER run with a dense "
                                          "head: ID prefix + dense score of the item's text)")] = None,
                       tau: Annotated[Optional[list[float]], typer.Option(
                           "--tau", help="neighbours / blend: kernel width in cosine similarity (repeatable; default 0.1)")]
                       = None,
                       blend_weight: Annotated[float, typer.Option(
                           help="blend: the share of probability the history's items pass")] = 0.5,
                       reuse: Annotated[bool, typer.Option(help="rank again with OUT's finished run (no training)")]
                       = False,
                       model: Annotated[str, typer.Option(help="a generator that supports cold start (tiger, lcrec) "
                                                               "or vqrec (OPQ codes from text)")] = "tiger",
                       lm: Annotated[str, typer.Option("--lm", help="lcrec: the causal LM (as `train lcrec --model`)")]
                       = "tiny-llama",
                       init: Annotated[Optional[Path], typer.Option(help="a pre-trained run to fine-tune (vqrec; "
                                                                         "default: trained on the seen items alone)")]
                       = None,
                       config: ConfigOpt = None, set_: SetOpt = None):
    """TIGER's cold-start protocol: hold out items, train without them, add them by text, rank (vs semantic KNN).

    Examples:
      sidrec evaluate-coldstart data/beauty --out runs/beauty-cold --epsilon 0.1 --epsilon 0.3
      sidrec evaluate-coldstart data/scientific --model vqrec --init runs/vq-pre --out runs/sci-cold-vq
    """
    spec = coldstart_spec(model)
    if spec.tokenizer and (tokenizer_spec(method).inputs != ("embeddings",) or not tokenizer_spec(method).encodes):
        raise SidrecError(f"--method {method}: the cold-start protocol fits the tokenizer on the seen items from "
                          f"text alone; use one of "
                          f"{', '.join(t for t, s in TOKENIZERS.items() if s.inputs == ('embeddings',) and s.encodes)}")
    if init is not None and not spec.pretrain:
        raise SidrecError(f"--init (a pre-trained run) does not apply to {model}; it goes with --model "
                          f"{'|'.join(n for n, s in coldstart_models().items() if s.pretrain)}")
    eps = tuple(epsilon) if epsilon else ColdStartConfig().epsilons
    if any(not 0 < e <= 1 for e in eps):
        raise SidrecError(f"--epsilon {list(eps)}: each must lie in (0, 1]")
    ccfg = ColdStartConfig(holdout=holdout, epsilons=eps, k=k, beam=beam, seed=seed,
                           prefix_levels=tuple(prefix_levels or ()), reuse=reuse, blend_weight=blend_weight,
                           **({"taus": tuple(tau)} if tau else {}), **({"rules": tuple(rule)} if rule else {}))
    fields = {f for c in spec.configs for f in c.__dataclass_fields__}
    given = {k_: v for k_, v in dict(epochs=epochs, batch_size=batch_size, seed=seed, device=device, preset=preset,
                                     model=lm).items() if k_ in fields}  # preset: TIGER's; model: an LLM's backbone
    cfgs = layered(list(spec.configs), config, set_, given, defaults=spec.defaults(preset, init))
    ds = load_dataset(data)
    cold = spec.build(tuple(cfgs), method=method, cfg=ccfg, init=init,
                      tok_overrides={"seed": seed, "n_levels": levels, "codebook_size": codebook_size},
                      embed_cfg=EmbedConfig(encoder=encoder, seed=seed, device=device))
    rows = run(ds, out, cold, embed_cfg=EmbedConfig(encoder=encoder, seed=seed, device=device), cfg=ccfg,
               embeddings=embeddings, device=cfgs[-1].device, log=console.print)
    print_table([["epsilon", "model", "slots", "rule", "levels", "tau", f"R@{k}", f"N@{k}", "users"]] +
                [[str(r["epsilon"]), r["model"], r["slots"], r["rule"], str(r["levels"] or "-"), str(r["tau"] or "-"),
                  f"{r[f'recall@{k}']:.4f}", f"{r[f'ndcg@{k}']:.4f}", str(r["users"])]
                 for r in rows], f"cold start, {data}: held-out items added by text")
