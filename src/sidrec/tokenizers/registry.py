"""Explicit name -> (tokenizer class, config class) registry; no string-based imports."""

from __future__ import annotations

from sidrec.errors import SidrecError


def tokenizer_for(method: str):
    from sidrec.tokenizers.opq import OPQConfig, OPQTokenizer
    from sidrec.tokenizers.published import PublishedConfig, PublishedTokenizer
    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer
    from sidrec.tokenizers.letter import LETTERTokenizer
    from sidrec.tokenizers.rqvae import PRESETS, RQVAETokenizer

    table = {"rqvae": (RQVAETokenizer, PRESETS["tiger"]), "letter": (LETTERTokenizer, PRESETS["letter"]),
             "rqkmeans": (RQKMeansTokenizer, RQKMeansConfig()), "opq": (OPQTokenizer, OPQConfig()),
             "published": (PublishedTokenizer, PublishedConfig())}
    if method not in table:
        raise SidrecError(f"unknown tokenizer method {method!r}; choose one of {', '.join(table)}")
    return table[method]


def load_tokenizer(path):
    """The fitted tokenizer of a tokens directory, whatever its method (it can ``encode`` new items
    unless the method cannot)."""
    from sidrec.tokenizers.base import SemanticIDs

    method = SemanticIDs(path).meta.get("method", "")
    return tokenizer_for(method)[0].load(path)
