"""Explicit name -> (tokenizer class, config class) registry; no string-based imports."""

from __future__ import annotations

from sidrec.errors import SidrecError


def tokenizer_for(method: str):
    from sidrec.tokenizers.opq import OPQConfig, OPQTokenizer
    from sidrec.tokenizers.published import PublishedConfig, PublishedTokenizer
    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer
    from sidrec.tokenizers.rqvae import PRESETS, LETTERTokenizer, RQVAETokenizer

    table = {"rqvae": (RQVAETokenizer, PRESETS["tiger"]), "letter": (LETTERTokenizer, PRESETS["letter"]),
             "rqkmeans": (RQKMeansTokenizer, RQKMeansConfig()), "opq": (OPQTokenizer, OPQConfig()),
             "published": (PublishedTokenizer, PublishedConfig())}
    if method not in table:
        raise SidrecError(f"unknown tokenizer method {method!r}; choose one of {', '.join(table)}")
    return table[method]
