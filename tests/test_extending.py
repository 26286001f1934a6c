"""Extending sidrec: a generator and a tokenizer defined in this file only, each one registry entry, driven
through every command that takes a generator or a tokenizer (train, recommend, serve, evaluate-coldstart,
tokenize, a pipeline config) with no other file changed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sidrec.decoding.trie import build_trie
from sidrec.models.tiger import Vocab
from sidrec.tokenizers.base import ItemTokenizer
from sidrec.tokenizers.registry import TOKENIZERS, TokenizerSpec, register_tokenizer
from sidrec.train.generator import GENERATORS, GeneratorSpec, register_generator
from sidrec.train.loop import load_weights
from sidrec.train.trainer import id_sizes, read_run, train_generator

from conftest import pattern_dataset


# -- a GRU generator over semantic IDs (the models/generator.py contract) ------------------------------------------
@dataclass(frozen=True, kw_only=True)
class GRUConfig:
    hidden: int = 64
    max_history: int | None = None
    spare_suffixes: int = 16  # collision suffixes kept free for items added later (cold start)


class GRUGenerator(nn.Module):
    kind = "gru"

    def __init__(self, cfg: GRUConfig, vocab: Vocab, codes: np.ndarray):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        self.emb = nn.Embedding(vocab.size, cfg.hidden, padding_idx=0)
        self.enc = nn.GRU(cfg.hidden, cfg.hidden, batch_first=True)
        self.dec = nn.GRU(cfg.hidden, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, vocab.size)
        self.register_buffer("item_tok", vocab.item_tokens(codes), persistent=False)

    @property
    def id_length(self) -> int:
        return self.item_tok.shape[1]

    def _context(self, hist: torch.Tensor) -> torch.Tensor:
        return self.enc(self.emb(self.item_tok[hist].flatten(1)))[1]  # (1, B, H)

    def teacher_forced(self, users, hist, target):
        labels = self.item_tok[target]
        dec_in = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
        y, _ = self.dec(self.emb(dec_in), self._context(hist))
        return self.out(y), labels

    def forward(self, users, hist, target):
        logits, labels = self.teacher_forced(users, hist, target)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())

    def decode_start(self, users, hist):
        return {"h": self._context(hist)}

    def decode_step(self, tokens, state):
        h = state["h"]
        if h.shape[1] != tokens.shape[0]:  # first step: every hypothesis of a user starts from its history
            h = h.repeat_interleave(tokens.shape[0] // h.shape[1], dim=1)
        y, h = self.dec(self.emb(tokens), h)
        return self.out(y[:, -1]), {"h": h}

    def decode_reorder(self, state, index):
        return {"h": state["h"][:, index]}


def build_gru(cfg: GRUConfig, ids):
    sizes = id_sizes(ids, cfg.spare_suffixes)
    return GRUGenerator(cfg, Vocab(sizes), ids.codes), build_trie(ids.codes, sizes)


def train_gru(ds, tokens, out, model_cfg, train_cfg, **kw):
    return train_generator(ds, tokens, out, model_cfg, train_cfg, kind="gru", build=build_gru, compilable=False, **kw)


def load_gru(run, device="cpu"):
    from sidrec.config import from_dict

    run, conf, ids = read_run(run, "gru", "GRU")
    model, trie = build_gru(from_dict(GRUConfig, conf["model"]), ids)
    load_weights(model, run / "model.safetensors", device)
    return model.to(device).eval(), trie.to(device), conf


# -- a toy tokenizer: seeded random projections, argmax per level (the tokenizers/base.py contract) -----------------
@dataclass(frozen=True, kw_only=True)
class ProjConfig:
    n_levels: int = 2
    codebook_size: int = 8
    collision: str = "append"
    seed: int = 0


class ProjTokenizer(ItemTokenizer):
    method = "proj"
    config_cls = ProjConfig

    def fit(self, emb=None, *, cf=None, train_mask=None, item_ids=None, log=lambda s: None):
        rng = np.random.default_rng(self.cfg.seed)
        self.proj_ = rng.normal(size=(emb.shape[1], self.cfg.n_levels, self.cfg.codebook_size)).astype(np.float32)
        self.finalize(self.encode(emb))
        return self

    def encode(self, emb):
        return np.einsum("nd,dlc->nlc", np.asarray(emb, np.float32), self.proj_).argmax(-1).astype(np.int64)

    def _save_weights(self, out: Path) -> None:
        np.save(out / "proj.npy", self.proj_)

    def _load_weights(self, path: Path, meta: dict) -> None:
        self.proj_ = np.load(path / "proj.npy")


@pytest.fixture
def registered():
    register_generator(GeneratorSpec("gru", GRUConfig, train_gru, load_gru,
                                     defaults=dict(epochs=30, batch_size=64, learning_rate=1e-2, patience=5,
                                                   select_metric="loss"), about="a GRU decoder over semantic IDs"))
    register_tokenizer(TokenizerSpec("proj", ProjTokenizer, ProjConfig(), about="random projections"))
    yield
    GENERATORS.pop("gru")
    TOKENIZERS.pop("proj")
    from sidrec.cli import train as train_cmd  # the command made for "gru" goes with it

    train_cmd.app.registered_commands[:] = [c for c in train_cmd.app.registered_commands if c.name != "gru"]


def test_a_generator_of_its_own_trains_recommends_serves_and_does_cold_start(registered, cli, tmp_path):
    pattern_dataset(tmp_path, texts=True)  # item i is followed by item i+1
    code, out, err = cli("train", "gru", tmp_path / "ds", "--tokens", tmp_path / "tok", "--out", tmp_path / "run",
                         "--hidden", "64", "--epochs", "25", "--seed", "0")
    assert code == 0, err[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["kind"] == "gru"
    assert m["test"]["recall@10"] > 0.6, m["test"]  # it learned the planted pattern
    # recommend: after i3 comes i4
    code, out, err = cli("recommend", tmp_path / "run", "--history", "i2", "--history", "i3", "--k", "3")
    assert code == 0, err[-2000:]
    first = next(line for line in out.splitlines() if re.match(r"\W*1\W", line))  # the table's rank-1 row
    assert re.search(r"\bi4\b", first), out
    # serve (the FastAPI app over the run)
    import asyncio

    import httpx

    from sidrec.serving.app import create_app

    async def ask():
        app = create_app(tmp_path / "run")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/recommend", json={"history": ["i2", "i3"], "k": 3})

    r = asyncio.run(ask())
    assert r.status_code == 200 and r.json()["items"][0]["item"] == "i4"
    # cold start: the protocol trains the generator on the seen items and adds the held-out ones by text
    code, out, err = cli("evaluate-coldstart", tmp_path / "ds", "--model", "gru", "--encoder", "tfidf", "--method",
                         "rqkmeans", "--levels", "2", "--codebook-size", "4", "--epochs", "2", "--holdout", "0.2",
                         "--epsilon", "0.2", "--rule", "prefix", "--out", tmp_path / "cold")
    assert code == 0, err[-2000:]
    rows = json.loads((tmp_path / "cold" / "coldstart.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert any(r["model"] == "gru" for r in rows) and all(0 <= r["recall@10"] <= 1 for r in rows)
    assert json.loads((tmp_path / "cold" / "run" / "config.json").read_text())["kind"] == "gru"


def test_a_tokenizer_of_its_own_in_the_cli_and_a_pipeline_with_the_generator(registered, cli, tmp_path):
    from sidrec.pipeline import run_pipeline

    ds = pattern_dataset(tmp_path, texts=True)
    code, out, err = cli("embed", tmp_path / "ds", "--encoder", "tfidf", "--dim", "16", "--out", tmp_path / "emb")
    assert code == 0, err
    code, out, err = cli("tokenize", tmp_path / "ds", "--method", "proj", "--embeddings", tmp_path / "emb",
                         "--out", tmp_path / "t2", "--epochs", "3")  # --epochs: not an option of proj, dropped
    assert code == 0, err[-2000:]
    meta = json.loads((tmp_path / "t2" / "tokenizer.json").read_text())
    assert meta["method"] == "proj" and meta["levels"] == 2
    codes = np.load(tmp_path / "t2" / "codes.npy")
    assert len({tuple(c) for c in codes}) == ds.n_items  # unique IDs (collision suffix appended)
    code, out, err = cli("config", "show", "gru", "--set", "hidden=16")
    assert code == 0 and "hidden = 16" in out and "epochs = 30" in out
    # the pipeline takes the new stage and the new method by name
    cfg = {"data": {"source": "synthetic", "synthetic": {"n_users": 200, "n_items": 60}, "min_count": 2},
           "embed": {"encoder": "tfidf", "dim": 16}, "tokenize": {"method": "proj", "codebook_size": 8},
           "gru": {"hidden": 32, "epochs": 2}}
    res = run_pipeline(cfg, tmp_path / "p", log=lambda s: None)
    assert set(res["test"]) == {"gru"} and 0 <= res["test"]["gru"]["recall@10"] <= 1
    assert json.loads((tmp_path / "p" / "gru" / "config.json").read_text())["kind"] == "gru"
