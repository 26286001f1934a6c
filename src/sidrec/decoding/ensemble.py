"""Several generator runs on the same semantic IDs decoded as one: at every ID level the members' next-token
log-probabilities are averaged (weighted) and renormalised, a product of experts (a geometric mixture), so one
trie-constrained beam search returns the items the members agree on. Typical use: the same recipe trained with
two seeds (``sidrec ensemble RUN_A RUN_B``). Members share the IDs (the same tokens), the vocabulary layout and the
history length.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from sidrec.errors import SidrecError


class Ensemble:
    """The decoder contract (``decode_start`` / ``decode_step`` / ``decode_reorder``, ``vocab``, ``item_tok``) over
    ``models``; ``weights`` (default equal) are normalised to sum to 1."""

    def __init__(self, models: list, weights: list[float] | None = None, names: list[str] | None = None):
        if not models:
            raise SidrecError("an ensemble needs at least one run")
        names = names or [f"member {i + 1}" for i in range(len(models))]
        first = models[0]
        for m, name in zip(models[1:], names[1:]):
            if m.vocab.offsets != first.vocab.offsets or m.vocab.size != first.vocab.size or not torch.equal(m.item_tok.cpu(), first.item_tok.cpu()):
                raise SidrecError(f"{name}: its semantic IDs differ from {names[0]}'s; ensemble runs trained on the "
                                  f"same tokens")
            if m.cfg.max_history != first.cfg.max_history:
                raise SidrecError(f"{name}: max_history {m.cfg.max_history}, {names[0]}: {first.cfg.max_history}; "
                                  f"ensemble runs with the same history length")
        self.models = models
        self.weights = self.normalised(models, weights)
        self.vocab, self.item_tok = first.vocab, first.item_tok
        self.cfg = SimpleNamespace(max_history=first.cfg.max_history)
        if all(hasattr(m, "digit_log_probs") for m in models):  # parallel members (RPG): exact ranking, as one model
            self.item_log_probs = self._item_log_probs

    @torch.no_grad()
    def _item_log_probs(self, users: torch.Tensor, hist: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Every item's score under the ensemble of parallel members: each digit's log-probabilities averaged
        (weighted) and renormalised, as ``decode_step`` does per level, summed over the item's digits."""
        lp = sum(w * m.digit_log_probs(hist).float() for m, w in zip(self.models, self.weights) if w > 0)
        return self.models[0].score_digits(torch.log_softmax(lp, -1), levels)

    @staticmethod
    def normalised(models: list, weights: list[float] | None) -> list[float]:
        """``weights`` (default equal), one non-negative weight per model, not all 0, scaled to sum to 1."""
        w = [1.0] * len(models) if weights is None else [float(x) for x in weights]
        if len(w) != len(models) or any(x < 0 for x in w) or sum(w) <= 0:
            raise SidrecError(f"ensemble weights {w}: one non-negative weight per run ({len(models)}), not all 0")
        return [x / sum(w) for x in w]

    @property
    def id_length(self) -> int:
        return self.item_tok.shape[1]

    def eval(self) -> Ensemble:
        for m in self.models:
            m.eval()
        return self

    def decode_start(self, users: torch.Tensor, hist: torch.Tensor) -> list:
        return [m.decode_start(users, hist) for m in self.models]

    def decode_step(self, tokens: torch.Tensor, states: list) -> tuple[torch.Tensor, list]:
        total, out = None, []
        for m, w, s in zip(self.models, self.weights, states):
            logits, s = m.decode_step(tokens, s)
            lp = torch.log_softmax(logits.float(), -1) * w
            total = lp if total is None else total + lp
            out.append(s)
        return total, out  # the beam search renormalises (log_softmax) per level

    def decode_reorder(self, states: list, index: torch.Tensor) -> list:
        return [m.decode_reorder(s, index) for m, s in zip(self.models, states)]
