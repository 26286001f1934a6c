"""Tokenizer specs: one registry entry per tokenizer method (no string-based imports).

A ``TokenizerSpec`` says what the CLI, the pipeline and cold start need to know: the tokenizer class and its
default config (its fields are the method's options), the inputs it reads (``embeddings`` from a text encoder,
``cf`` from a SASRec run, ``index`` a released ID file), whether it trains by epochs on a device (so
``--epochs``/``--device`` apply), whether it trains under torchrun, and whether it can ``encode`` new items (cold
start). Adding a tokenizer = its module (the ``ItemTokenizer`` contract, tokenizers/base.py) + one
``register_tokenizer(TokenizerSpec(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidrec.errors import SidrecError
from sidrec.tokenizers.base import SemanticIDs
from sidrec.tokenizers.letter import LETTERTokenizer
from sidrec.tokenizers.opq import OPQConfig, OPQTokenizer
from sidrec.tokenizers.published import PublishedConfig, PublishedTokenizer
from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer
from sidrec.tokenizers.rqvae import PRESETS, RQVAETokenizer


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    cls: type  # an ItemTokenizer
    default: Any  # its default config (a dataclass instance)
    inputs: tuple[str, ...] = ("embeddings",)  # embeddings | cf | index
    by_epochs: bool = False  # trains by gradient epochs on a device (--epochs, --device apply)
    sized: bool = True  # has levels x codebook size (--levels, --codebook-size apply)
    distributed: bool = False  # trains under torchrun
    encodes: bool = True  # gives new items IDs from their embeddings (cold start)
    about: str = ""

    def drop_inapplicable(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Generic options (a smoke run's epochs, --levels ...) that this method does not have are dropped."""
        fields = set(self.default.__dataclass_fields__)
        generic = {"epochs", "device", "n_levels", "codebook_size", "seed"}
        return {k: v for k, v in overrides.items() if k in fields or k not in generic}


TOKENIZERS: dict[str, TokenizerSpec] = {}


def register_tokenizer(spec: TokenizerSpec) -> TokenizerSpec:
    TOKENIZERS[spec.name] = spec
    return spec


def tokenizer_spec(method: str) -> TokenizerSpec:
    if method not in TOKENIZERS:
        raise SidrecError(f"unknown tokenizer method {method!r}; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[method]


def tokenizer_for(method: str):
    """(tokenizer class, default config) of a registered method."""
    spec = tokenizer_spec(method)
    return spec.cls, spec.default


def load_tokenizer(path):
    """The fitted tokenizer of a tokens directory, whatever its method (it can ``encode`` new items
    unless the method cannot)."""
    method = SemanticIDs(path).meta.get("method", "")
    return tokenizer_for(method)[0].load(path)


def _builtin() -> None:
    register_tokenizer(TokenizerSpec("rqvae", RQVAETokenizer, PRESETS["tiger"], by_epochs=True, distributed=True,
                                     about="TIGER's RQ-VAE"))
    register_tokenizer(TokenizerSpec("letter", LETTERTokenizer, PRESETS["letter"], inputs=("embeddings", "cf"),
                                     by_epochs=True, distributed=True, about="LETTER: RQ-VAE + CF alignment + diversity"))
    register_tokenizer(TokenizerSpec("rqkmeans", RQKMeansTokenizer, RQKMeansConfig(), about="residual k-means (faiss)"))
    register_tokenizer(TokenizerSpec("opq", OPQTokenizer, OPQConfig(), about="OPQ codes (VQ-Rec)"))
    register_tokenizer(TokenizerSpec("published", PublishedTokenizer, PublishedConfig(), inputs=("index",),
                                     sized=False, encodes=False, about="IDs released elsewhere (*.index.json)"))


_builtin()
