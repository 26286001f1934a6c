"""The generator contract: what a semantic-ID generator provides so that training, decoding, serving and the
pipeline can use it without knowing which one it is.

A generator is an ``nn.Module`` with
- ``kind``: the run kind it writes into ``RUN/config.json`` (``"tiger"``, ``"lcrec"``);
- ``cfg`` (with ``max_history``) and ``vocab`` (``offsets``: the token id of code 0 of each ID level);
- ``forward(users, hist, target) -> loss``: the training loss of a batch (the loop calls it, maybe compiled);
- ``teacher_forced(users, hist, target) -> (logits (B, L, V), labels (B, L))`` (validation loss, cold-start
  prefix scores) and ``item_tok`` (item index -> ID tokens; grows when items are added) with ``id_length``;
- ``decode_start(users, hist) -> state``, ``decode_step(tokens (B*G, 1), state) -> (logits (B*G, V), state)``,
  ``decode_reorder(state, index) -> state``: what the shared trie-constrained ``beam_search`` drives;
- a loader ``load(run, device) -> (model, trie, config)``.
Adding a generator = one model module implementing these, its trainer and one ``GeneratorSpec`` registered in
``sidrec.train.generator`` (the CLI, pipeline, cold start and serving read the registry).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Generator(Protocol):
    kind: str
    cfg: Any
    vocab: Any

    def __call__(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def decode_start(self, users: torch.Tensor, hist: torch.Tensor) -> Any: ...

    def decode_step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...

    def decode_reorder(self, state: Any, index: torch.Tensor) -> Any: ...
