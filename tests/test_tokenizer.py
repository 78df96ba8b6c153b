"""The word-level SmartWatch tokenizer: round trip, no unknown tokens, determinism, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from uvlm.data import SmartWatch, SplitConfig, texts
from uvlm.data.attributes import TEXT_ATTRIBUTES, rng_for, sample_attributes
from uvlm.data.tokenizer import build_tokenizer, normalize_text, vocabulary


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def smartwatch_texts(n: int = 700) -> list[str]:
    """Every text field of n VQA, caption and generation samples, plus full captions and full instructions."""
    sw = SmartWatch(SplitConfig(name="tok-test", seed=3, n_vqa=n, n_caption=n, n_generation=n))
    out: list[str] = []
    for task in ("vqa", "caption", "generation"):
        for s in sw.stream(task, with_image=False):
            out += [c["value"] for c in s.conversations()]
            out += [t.question for t in s.turns] + [t.answer for t in s.turns if t.answer]
    full = {a: 1.0 for a in TEXT_ATTRIBUTES}
    for i in range(n):
        attrs = sample_attributes(rng_for(5, "tok-full", "attributes", i))
        out.append(texts.caption(rng_for(5, "tok-full", "caption", i), attrs, full)[0].answer)
        out.append(texts.instruction(rng_for(5, "tok-full", "generation", i), attrs, full)[0])
    return out


def test_round_trip_and_no_unknown_tokens(tok):
    samples = smartwatch_texts()
    assert len(samples) > 5_000
    encodings = tok(samples).input_ids
    unknown = [t for t, ids in zip(samples, encodings) if tok.unk_token_id in ids]
    assert unknown == []
    decoded = tok.batch_decode(encodings, skip_special_tokens=True)
    mismatched = [(t, d) for t, d in zip(samples, decoded) if d != normalize_text(t)]
    assert mismatched == []
    # the normalisation is a no-op on generated texts: the round trip is exact
    assert all(normalize_text(t) == t for t in samples)


def test_values_are_compact_tokens(tok):
    assert tok.tokenize("time 02:07:00") == ["\u2581time", "\u2581", "02", ":", "07", ":", "00"]
    assert tok.tokenize("at 100%") == ["\u2581at", "\u2581", "100", "%"]
    assert tok.tokenize("in the top-left corner") == ["\u2581in", "\u2581the", "\u2581top-left", "\u2581corner"]
    assert tok.convert_tokens_to_ids(texts.IMAGE_TOKEN) != tok.unk_token_id
    ids = tok(f"{texts.IMAGE_TOKEN}\nWhat time does the watch show?").input_ids
    assert tok.convert_ids_to_tokens(ids)[:3] == ["<s>", texts.IMAGE_TOKEN, "\n"]


def test_split_digits_round_trip():
    tok = build_tokenizer(split_digits=True)
    assert tok.tokenize("time 02:07:00, 100%")[2:] == ["0", "2", ":", "0", "7", ":", "0", "0", ",", "\u2581", "1",
                                                      "0", "0", "%"]
    samples = smartwatch_texts(200)
    decoded = tok.batch_decode(tok(samples).input_ids, skip_special_tokens=True)
    assert decoded == samples


def test_special_tokens_and_unknown_words(tok):
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    ids = tok("What is the zyzzyva?").input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id in ids
    batch = tok(["What time?", "Where is the battery?"], padding=True)
    assert batch.input_ids[0][-1] == tok.pad_token_id and batch.attention_mask[0][-1] == 0


def test_whitespace_normalisation(tok):
    text = "  What\ttime   is\n it?"
    assert normalize_text(text) == "What time is\n it?"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == normalize_text(text)


def test_vocabulary_is_deterministic_and_extensible(tok):
    assert vocabulary() == tok.get_vocab()
    assert vocabulary() == vocabulary()
    assert list(vocabulary())[:5] == ["<pad>", "<s>", "</s>", "<unk>", texts.IMAGE_TOKEN]
    ext = build_tokenizer(extra_words=["USER: ASSISTANT:"])
    assert tok.unk_token_id in tok("USER: hi").input_ids
    assert ext.unk_token_id not in ext("USER: What time? ASSISTANT: 02:07:00").input_ids


def test_save_and_reload(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    samples = smartwatch_texts(50)
    assert again(samples).input_ids == tok(samples).input_ids
    assert again.pad_token_id == tok.pad_token_id and len(again) == len(tok)
    rng = np.random.default_rng(0)
    ids = tok(samples[int(rng.integers(len(samples)))]).input_ids
    assert again.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)
