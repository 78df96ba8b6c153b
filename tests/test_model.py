"""The unified VLM on cached tensors: equivalence with the bare LLM, adapters, affine map, losses, training, decoding."""

from __future__ import annotations

import copy

import pytest
import torch

from uvlm.data import SmartWatch, SplitConfig
from uvlm.data.texts import Turn
from uvlm.data.tokenizer import build_tokenizer
from uvlm.errors import UserError
from uvlm.model.adapters import AffineMap
from uvlm.model.config import LLMConfig, SamplingConfig, TemplateConfig, UnifiedConfig
from uvlm.model.generate import answer, generate_images
from uvlm.model.sequence import prediction_mask
from uvlm.model.unified import UnifiedVLM, build_llm

D_SIGLIP, D_VQ, K, N = 128, 8, 512, 64
CODEBOOK = torch.nn.functional.normalize(torch.randn(K, D_VQ, generator=torch.Generator().manual_seed(0)), dim=-1)
INSTRUCTIONS = ["Draw a smart watch.", "Can you draw a smart watch, showing the time 02:07:00, with sunny weather "
                                       "displayed, and the battery in the top-left corner?"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(extra_words=TemplateConfig().words())


@pytest.fixture(scope="module")
def data():
    sw = SmartWatch(SplitConfig.train(n_vqa=4, n_caption=4, n_generation=4))
    return {t: [sw.sample(t, i, with_image=False) for i in range(4)] for t in ("vqa", "caption", "generation")}


def config(encoder="siglip", target="siglip", **kw) -> UnifiedConfig:
    kw.setdefault("llm", LLMConfig(preset="debug"))
    return UnifiedConfig(encoder=encoder, input_dim=D_SIGLIP if encoder == "siglip" else D_VQ, target=target,
                         target_dim=D_SIGLIP, num_output_tokens=N, **kw)


def model(tok, encoder="siglip", target="siglip", **kw) -> UnifiedVLM:
    return UnifiedVLM(config(encoder, target, **kw), tok, codebook=CODEBOOK if target == "vq" else None)


def features(encoder: str, seed: int) -> torch.Tensor:
    """Random stand-ins of cached understanding features: SigLIP tokens, or VQ latents (codebook rows)."""
    g = torch.Generator().manual_seed(seed)
    if encoder == "vq":
        return CODEBOOK[torch.randint(0, K, (N,), generator=g)]
    return torch.randn(N, D_SIGLIP, generator=g)


def targets(target: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    if target == "vq":
        return torch.randint(0, K, (N,), generator=g)
    return torch.randn(N, D_SIGLIP, generator=g)  # SigLIP embeddings; for llm-embeds, SigLIP input features


def examples(m: UnifiedVLM, data, mode: str, n: int = 2) -> list:
    enc, tgt = m.config.encoder, m.config.target
    out = []
    for i in range(n):
        if mode in ("mixed", "understanding"):
            task = "vqa" if i % 2 == 0 else "caption"
            out.append(m.sequences.example(data[task][i], features=features(enc, i)))
        if mode in ("mixed", "generation"):
            out.append(m.sequences.example(data["generation"][i], targets=targets(tgt, i)))
    return out


def train(m: UnifiedVLM, batch, steps: int = 8, lr: float = 3e-3) -> list:
    groups = m.parameter_groups()
    opt = torch.optim.AdamW([{"params": groups["llm"]}, {"params": groups["vision"]}], lr=lr)
    hist = []
    for _ in range(steps):
        out = m(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        hist.append((float(out.loss.detach()), float(out.text_loss.detach()), float(out.vision_loss.detach())))
    return hist


# ------------------------------------------------------------------ the LLM inside


def test_text_only_logits_equal_the_bare_transformers_model():
    tok = build_tokenizer(extra_words=TemplateConfig().words())  # as a pretrained LLM: no vision tokens yet
    vocab = len(tok)
    torch.manual_seed(5)
    bare = build_llm(LLMConfig(preset="debug"), tok).eval()
    m = UnifiedVLM(config(), tok, llm=copy.deepcopy(bare)).eval()  # adds the vision tokens and resizes
    assert len(tok) == vocab + 2 and m.llm.get_input_embeddings().num_embeddings == len(tok)
    enc = tok(["What time does the watch show?", "Where is the battery?"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = m.text_logits(enc.input_ids, enc.attention_mask)
        ref = bare(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    real = enc.attention_mask.bool()
    assert ours.shape[-1] == vocab + 2 and ref.shape[-1] == vocab
    assert torch.allclose(ours[..., :vocab][real], ref[real], atol=1e-5)


def test_presets_and_pretrained_folder(tok, tmp_path):
    n = sum(p.numel() for p in model(tok).llm.parameters())
    assert 0.15e6 < n < 0.5e6  # debug: ~0.3M
    m = UnifiedVLM(config(llm=LLMConfig(preset="tiny")), tok)
    assert m.hidden_size == 256 and 3e6 < sum(p.numel() for p in m.llm.parameters()) < 6e6
    assert m.llm.get_input_embeddings().num_embeddings == len(tok)
    m.llm.save_pretrained(tmp_path / "llm")
    loaded = UnifiedVLM(config(llm=LLMConfig(pretrained=str(tmp_path / "llm"))), tok)
    ids = tok(["What is the battery level?"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(loaded.eval().text_logits(ids), m.eval().text_logits(ids), atol=1e-5)
    with pytest.raises(UserError, match="not found"):
        UnifiedVLM(config(llm=LLMConfig(pretrained=str(tmp_path / "missing"))), tok)


def test_same_seed_same_weights(tok):
    a, b, c = model(tok, "vq", "vq"), model(tok, "vq", "vq"), model(tok, "vq", "vq", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# ------------------------------------------------------------------ adapters and affine map


def test_shared_and_detached_adapters(tok):
    ss, vv = model(tok, "siglip", "siglip"), model(tok, "vq", "vq")
    for m in (ss, vv):
        assert m.shared_adapter and m.generation_adapter is m.understanding_adapter and m.gen_adapter is None
    for m in (model(tok, "siglip", "siglip", detach=True), model(tok, "vq", "vq", detach=True),
              model(tok, "siglip", "vq"), model(tok, "vq", "siglip")):
        assert not m.shared_adapter and m.generation_adapter is not m.understanding_adapter
        und = {id(p) for p in m.understanding_adapter.parameters()}
        assert und and not und & {id(p) for p in m.generation_adapter.parameters()}
    assert model(tok, "siglip", "vq").generation_adapter.in_features == D_VQ
    assert model(tok, "vq", "siglip").generation_adapter.in_features == D_SIGLIP
    # the head is always its own module; the mlp option is Linear-GELU-Linear
    assert ss.target.head.out_features == D_SIGLIP and vv.target.head.out_features == K
    mlp = model(tok, "siglip", "siglip", adapter="mlp", detach=True)
    assert [type(x).__name__ for x in mlp.understanding_adapter] == ["Linear", "GELU", "Linear"]
    # parameter groups partition the trainable parameters
    g = ss.parameter_groups()
    assert len(g["llm"]) + len(g["vision"]) == len(list(ss.parameters()))
    assert {id(p) for p in ss.target.head.parameters()} <= {id(p) for p in g["vision"]}


def test_affine_map_is_invertible_fixed_and_untrained(tok, data):
    a = AffineMap(32, seed=3, scale=(0.5, 2.0))
    x = torch.randn(5, 32)
    assert torch.allclose(a.inverse(a(x)), x, atol=1e-5) and not torch.allclose(a(x), x)
    s = torch.linalg.svdvals(a.matrix.double())
    assert 0.5 - 1e-5 <= float(s.min()) and float(s.max()) <= 2.0 + 1e-5
    assert torch.equal(AffineMap(32, seed=3).matrix, a.matrix) and not torch.equal(AffineMap(32, 4).matrix, a.matrix)
    assert list(a.parameters()) == []

    m = model(tok, "siglip", "siglip", affine=True)
    before = {k: v.clone() for k, v in m.affine.named_buffers()}
    assert not any(p is b for p in m.parameters() for b in m.affine.buffers())
    hist = train(m, m.sequences.collate(examples(m, data, "mixed")), steps=2)
    assert all(torch.equal(before[k], v) for k, v in m.affine.named_buffers())
    assert all(b.grad is None and not b.requires_grad for b in m.affine.buffers())
    assert hist[-1][0] < hist[0][0]
    # on the understanding path only, by default; the fed-back tokens go through the shared adapter alone
    f = torch.randn(1, 3, D_SIGLIP)
    with torch.no_grad():
        assert torch.allclose(m.embed_understanding(f), m.affine(m.understanding_adapter(f)))
        assert torch.allclose(m.embed_generated(f), m.understanding_adapter(f))
        assert torch.allclose(m.affine.inverse(m.embed_understanding(f)), m.understanding_adapter(f), atol=1e-5)
        both = model(tok, "siglip", "siglip", affine=True, affine_on_feedback=True)
        assert torch.allclose(both.embed_generated(f), both.embed_understanding(f))


# ------------------------------------------------------------------ losses


def test_losses_average_over_real_tokens_only(tok, data):
    m = model(tok, "siglip", "vq").eval()
    u1, g1, u2, g2 = examples(m, data, "mixed")
    c = m.sequences.collate
    with torch.no_grad():
        und_only, mixed = m(c([u1, u2])), m(c([u1, g1, u2, g2]))
        gen_only, one_u = m(c([g1, g2])), m(c([u1]))
    # extra generation rows (and their padding) change nothing in the text loss, and vice versa
    assert torch.allclose(mixed.text_loss, und_only.text_loss, atol=1e-5)
    assert torch.allclose(mixed.vision_loss, gen_only.vision_loss, atol=1e-5)
    assert mixed.num_answer_tokens == und_only.num_answer_tokens and mixed.num_image_tokens == 2 * N
    assert float(gen_only.text_loss) == 0.0 and gen_only.num_answer_tokens == 0
    assert float(und_only.vision_loss) == 0.0 and und_only.num_image_tokens == 0
    # a mean over answer tokens, not over samples
    with torch.no_grad():
        two_u = m(c([u2]))
    pooled = (one_u.text_loss * one_u.num_answer_tokens + two_u.text_loss * two_u.num_answer_tokens) / (
        one_u.num_answer_tokens + two_u.num_answer_tokens)
    assert one_u.num_answer_tokens != two_u.num_answer_tokens
    assert torch.allclose(und_only.text_loss, pooled, atol=1e-5)
    assert torch.allclose(mixed.loss, mixed.text_loss + 0.2 * mixed.vision_loss)


def test_teacher_forcing_is_causal_and_shifted_by_one(tok, data):
    m = model(tok, "siglip", "siglip").eval()
    ex = m.sequences.example(data["generation"][0], targets=targets("siglip", 0))

    def preds(t):
        ex.targets = t
        b = m.sequences.collate([ex])
        with torch.no_grad():
            emb, _ = m.input_embeddings(b)
            h = m.decode(emb, b.attention_mask).last_hidden_state
            return m.vision_head(h[prediction_mask(b.generation_mask)])  # (N, D): row j predicts image token j

    base_t = ex.targets.clone()
    base = preds(base_t)
    k = 10
    changed = base_t.clone()
    changed[k] += 5.0
    new = preds(changed)
    # the prediction of token j sees tokens < j only: changing token k leaves predictions 0..k alone
    assert torch.allclose(new[:k + 1], base[:k + 1], atol=1e-5)
    assert not torch.allclose(new[k + 1], base[k + 1], atol=1e-4)


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("encoder,target", [("siglip", "siglip"), ("vq", "vq"), ("siglip", "vq"), ("vq", "siglip"),
                                            ("siglip", "llm-embeds")])
def test_each_variant_learns_on_a_mixed_batch(tok, data, encoder, target):
    m = model(tok, encoder, target)
    hist = train(m, m.sequences.collate(examples(m, data, "mixed")))
    (l0, t0, v0), (l1, t1, v1) = hist[0], hist[-1]
    assert l1 < 0.8 * l0 and t1 < t0 and v1 < v0


@pytest.mark.parametrize("encoder,target,mode", [("siglip", "siglip", "understanding"), ("vq", "vq", "generation"),
                                                 ("siglip", None, "understanding"), ("siglip", "vq", "generation")])
def test_single_task_modes_learn(tok, data, encoder, target, mode):
    m = model(tok, encoder, target)
    hist = train(m, m.sequences.collate(examples(m, data, mode)))
    part = 1 if mode == "understanding" else 2
    assert hist[-1][part] < 0.8 * hist[0][part] and hist[-1][0] < hist[0][0]
    assert all(h[3 - part] == 0.0 for h in hist)


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize("target", ["vq", "siglip"])
def test_kv_cached_generation_equals_full_recompute(tok, data, target):
    m = model(tok, "siglip", target)
    train(m, m.sequences.collate(examples(m, data, "generation")), steps=3)
    m.eval()
    cached = generate_images(m, INSTRUCTIONS, num_tokens=12)
    full = generate_images(m, INSTRUCTIONS, num_tokens=12, use_cache=False)
    alone = torch.cat([generate_images(m, [t], num_tokens=12) for t in INSTRUCTIONS])  # left padding is invisible
    if target == "vq":
        assert cached.shape == (2, 12) and cached.dtype == torch.long
        assert torch.equal(cached, full) and torch.equal(cached, alone)
        assert len(set(cached.flatten().tolist())) > 1
    else:
        assert cached.shape == (2, 12, D_SIGLIP)
        assert torch.allclose(cached, full, atol=1e-4) and torch.allclose(cached, alone, atol=1e-4)


def test_sampled_generation_is_seeded(tok):
    m = model(tok, "vq", "vq").eval()
    s = SamplingConfig(temperature=1.0, top_k=50, seed=7)
    a = generate_images(m, INSTRUCTIONS, s, num_tokens=10)
    assert torch.equal(a, generate_images(m, INSTRUCTIONS, s, num_tokens=10, use_cache=False))
    assert not torch.equal(a, generate_images(m, INSTRUCTIONS, SamplingConfig(1.0, 50, seed=8), num_tokens=10))
    assert a.shape == (2, 10) and int(a.min()) >= 0 and int(a.max()) < K


def test_answer_reproduces_a_memorised_answer(tok):
    m = UnifiedVLM(UnifiedConfig(input_dim=16, target=None, llm=LLMConfig(preset="debug")), tok)
    f = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0))
    qa = [("What time does the watch show?", "02:07:00"), ("Which weather does the icon display?", "sunny")]
    batch = m.sequences.collate([m.sequences.understanding([Turn(q, a, "")], f[i]) for i, (q, a) in enumerate(qa)])
    train(m, batch, steps=80, lr=1e-2)
    m.eval()
    questions = [q for q, _ in qa]
    assert answer(m, f, questions) == [a for _, a in qa]
    assert answer(m, f[1:], questions[1:]) == ["sunny"]  # a row alone = the same row left-padded in a batch
    assert answer(m, f, questions, use_cache=False) == [a for _, a in qa]
    sampled = answer(m, f, questions, SamplingConfig(temperature=1.0, top_k=5, seed=1))
    assert sampled == answer(m, f, questions, SamplingConfig(temperature=1.0, top_k=5, seed=1))


# ------------------------------------------------------------------ errors


def test_bad_configs_and_batches_are_one_line_user_errors(tok, data):
    cases = [
        (lambda: UnifiedConfig(target="pixels"), "unknown generation target"),
        (lambda: UnifiedVLM(config("vq", "vq"), tok), "codebook"),
        (lambda: LLMConfig(preset="huge"), "unknown LLM preset"),
        (lambda: UnifiedConfig(encoder="dino"), "unknown encoder"),
        (lambda: UnifiedVLM(UnifiedConfig(input_dim=64, target="siglip", target_dim=32,
                                          llm=LLMConfig(preset="debug")), tok), "detach"),
        (lambda: UnifiedConfig.from_dict({"encoder": "vq", "colour": 1}), "unknown UnifiedConfig key"),
    ]
    for make, pattern in cases:
        with pytest.raises(UserError, match=pattern) as e:
            make()
        assert "\n" not in str(e.value)
    u = model(tok, "siglip", None)
    g = model(tok, "siglip", "siglip")
    with pytest.raises(UserError, match="no generation target"):
        u(u.sequences.collate(examples(g, data, "generation")))
    bad = u.sequences.understanding([("q", "a")], torch.randn(N, 7))
    with pytest.raises(UserError, match="input_dim"):
        u(u.sequences.collate([bad]))
    vq = model(tok, "siglip", "vq")
    wrong = vq.sequences.generation("Draw.", torch.randn(N, D_SIGLIP))
    with pytest.raises(UserError, match="int64"):
        vq(vq.sequences.collate([wrong]))


def test_the_kv_cache_keyword_follows_the_transformers_release():
    import inspect

    from transformers import LlamaModel

    from uvlm.model.unified import _cache_argument

    expected = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
    assert _cache_argument(LlamaModel) == expected

    class Old:  # a decoder of an older release: only past_key_values
        def forward(self, inputs_embeds=None, past_key_values=None, use_cache=False):
            pass

    assert _cache_argument(Old) == "past_key_values"
