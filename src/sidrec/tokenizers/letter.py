"""LETTER (Wang et al., CIKM 2024): the tokenizer, an RQ-VAE with two regularisers (tokenizers/letter_losses.py)."""

from __future__ import annotations

from sidrec.tokenizers.rqvae import RQVAETokenizer


class LETTERTokenizer(RQVAETokenizer):
    """LETTER: RQ-VAE + collaborative alignment (``cf_weight``) + codebook diversity (``div_weight``); needs
    CF embeddings (a SASRec run of width ``code_dim``). The training loop is the RQ-VAE's, which adds these
    two terms when their weights are set."""

    method = "letter"
