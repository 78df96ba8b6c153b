"""Token sequences: template, label masking, image positions, teacher-forcing offset, mixed collation."""

from __future__ import annotations

import pytest
import torch

from uvlm.data import SmartWatch, SplitConfig
from uvlm.data.texts import Turn
from uvlm.data.tokenizer import build_tokenizer
from uvlm.errors import UserError
from uvlm.model.config import TemplateConfig
from uvlm.model.sequence import (BOI, EOI, IGNORE, VISION_TOKENS, SequenceBuilder, TokenIds, add_vision_tokens,
                                 prediction_mask)


@pytest.fixture(scope="module")
def builder():
    return SequenceBuilder(build_tokenizer(extra_words=TemplateConfig().words()))


def _text(builder, ids):
    return builder.tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def test_vision_tokens_are_added_once_and_looked_up():
    tok = build_tokenizer(extra_words=TemplateConfig().words())
    n0 = len(tok)
    add_vision_tokens(tok)
    n1 = len(tok)
    assert add_vision_tokens(tok) == 0 and len(tok) == n1 > n0
    ids = TokenIds.lookup(tok)
    assert [ids.image, ids.boi, ids.eoi] == tok.convert_tokens_to_ids(list(VISION_TOKENS))
    assert len({ids.image, ids.boi, ids.eoi, ids.bos, ids.eos, ids.pad}) == 6
    for t in VISION_TOKENS:  # special: kept whole, dropped by skip_special_tokens
        assert tok.convert_ids_to_tokens(tok(t, add_special_tokens=False).input_ids) == [t]
        assert tok.decode(tok(t, add_special_tokens=False).input_ids, skip_special_tokens=True) == ""


def test_lookup_without_vision_tokens_is_a_user_error():
    tok = build_tokenizer()
    tok_ids = tok.convert_tokens_to_ids(BOI)
    assert tok_ids == tok.unk_token_id
    with pytest.raises(UserError, match="add_vision_tokens"):
        TokenIds.lookup(tok)


def test_understanding_labels_only_on_answers(builder):
    turns = [Turn("What time does the watch show?", "02:07:00", "time"), Turn("Where is the battery?", "top-left",
                                                                          "battery_position")]
    n_in = 5
    ex = builder.understanding(turns, torch.randn(n_in, 3))
    ids, labels, ti = ex.input_ids, ex.labels, builder.ids
    assert ids[0] == ti.bos and ids[-1] == ti.eos
    # the image placeholders sit right after <s>, and only there
    assert ex.understanding_mask.nonzero().flatten().tolist() == list(range(1, 1 + n_in))
    assert (ids[ex.understanding_mask] == ti.image).all() and int((ids == ti.image).sum()) == n_in
    assert not ex.generation_mask.any()
    # labels equal the ids where set; the labelled spans are exactly "answer </s>" per turn
    kept = labels != IGNORE
    assert (labels[kept] == ids[kept]).all()
    spans, cur = [], []
    for i, k in enumerate(kept.tolist()):
        if k:
            cur.append(int(ids[i]))
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    assert [s[-1] for s in spans] == [ti.eos, ti.eos]
    assert [_text(builder, s) for s in spans] == ["02:07:00", "top-left"]
    # everything unlabelled decodes to the template around the questions
    assert _text(builder, ids[~kept]) == ("USER: What time does the watch show? ASSISTANT: "
                                          "USER: Where is the battery? ASSISTANT:")


def test_generation_sequence_and_teacher_forcing_offset(builder):
    n_out = 4
    ex = builder.generation("Draw a smart watch.", torch.randint(0, 9, (n_out,)))
    ids, ti = ex.input_ids, builder.ids
    boi = int((ids == ti.boi).nonzero())
    assert ex.generation_mask.nonzero().flatten().tolist() == list(range(boi + 1, boi + 1 + n_out))
    assert len(ids) == boi + 1 + n_out and (ex.labels == IGNORE).all()
    assert _text(builder, ids[:boi]) == "USER: Draw a smart watch. ASSISTANT:"
    # <boi> predicts image token 0; image token k predicts k + 1; the last image token predicts nothing
    pred = prediction_mask(ex.generation_mask[None])[0]
    assert pred.nonzero().flatten().tolist() == list(range(boi, boi + n_out))


def test_label_boi_option():
    b = SequenceBuilder(build_tokenizer(extra_words=TemplateConfig().words()), TemplateConfig(label_boi=True))
    ex = b.generation("Draw a watch.", torch.zeros(3, 2))
    kept = (ex.labels != IGNORE).nonzero().flatten().tolist()
    assert len(kept) == 1 and int(ex.input_ids[kept[0]]) == b.ids.boi == int(ex.labels[kept[0]])


def test_inference_prompts_match_training_prefixes(builder):
    ex = builder.understanding([Turn("What is the battery level?", "51%", "battery")], torch.randn(3, 2))
    prompt = builder.answer_prompt("What is the battery level?", 3)
    assert ex.input_ids[:len(prompt)].tolist() == prompt and ex.labels[len(prompt)] != IGNORE
    assert (ex.labels[:len(prompt)] == IGNORE).all()
    gen = builder.generation("Draw a watch.", torch.zeros(3, 2))
    p = builder.image_prompt("Draw a watch.")
    assert gen.input_ids[:len(p)].tolist() == p and p[-1] == builder.ids.boi


def test_collate_mixed_batch_right_pads(builder):
    sw = SmartWatch(SplitConfig.train(n_vqa=3, n_caption=3, n_generation=3))
    feats = [torch.full((4, 2), float(i)) for i in range(3)]
    targs = [torch.full((5,), i, dtype=torch.long) for i in range(3)]
    exs = [builder.example(sw.sample("generation", 0, with_image=False), targets=targs[0]),
           builder.example(sw.sample("vqa", 0, with_image=False), features=feats[0]),
           builder.example(sw.sample("caption", 1, with_image=False), features=feats[1]),
           builder.example(sw.sample("generation", 2, with_image=False), targets=targs[2])]
    b = builder.collate(exs)
    lengths = [len(e.input_ids) for e in exs]
    assert b.input_ids.shape == (4, max(lengths))
    assert b.attention_mask.sum(1).tolist() == lengths
    for i, e in enumerate(exs):
        n = lengths[i]
        assert (b.input_ids[i, :n] == e.input_ids).all() and (b.input_ids[i, n:] == builder.ids.pad).all()
        assert (b.labels[i, n:] == IGNORE).all() and not b.understanding_mask[i, n:].any()
    # tensors stacked in row order, only for the rows that have them
    assert torch.equal(b.features, torch.stack([feats[0], feats[1]]))
    assert torch.equal(b.targets, torch.stack([targs[0], targs[2]]))
    assert b.num_image_tokens == 10 and b.num_answer_tokens == int((b.labels != IGNORE).sum())


def test_bad_inputs_are_user_errors(builder):
    sw = SmartWatch(SplitConfig.train(n_vqa=2, n_caption=2, n_generation=2))
    with pytest.raises(UserError, match="features"):
        builder.example(sw.sample("vqa", 0, with_image=False))
    with pytest.raises(UserError, match="targets"):
        builder.example(sw.sample("generation", 0, with_image=False))
    a = builder.understanding([("q", "a")], torch.zeros(4, 2))
    c = builder.understanding([("q", "a")], torch.zeros(5, 2))
    with pytest.raises(UserError, match="one shape"):
        builder.collate([a, c])
    with pytest.raises(UserError, match="template word"):
        SequenceBuilder(build_tokenizer(), TemplateConfig(user="Xyzzy:"))
    short = SequenceBuilder(builder.tokenizer, TemplateConfig(max_length=8))
    with pytest.raises(UserError, match="max_length") as e:
        short.generation("Draw a watch.", torch.zeros(16, 2))
    assert "\n" not in str(e.value)


def test_eoi_is_reserved(builder):
    assert builder.tokenizer.convert_tokens_to_ids(EOI) == builder.ids.eoi != builder.tokenizer.unk_token_id
