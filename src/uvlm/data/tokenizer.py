"""A word-level tokenizer for SmartWatch texts, as a proper ``transformers`` fast tokenizer.

Built with the ``tokenizers`` library (a ``WordLevel`` model) and wrapped in
:class:`transformers.PreTrainedTokenizerFast`, so ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` work. It
serves the tiny SigLIP text tower and the tiny LLM.

Pipeline (``tokenizers`` components only):

- normalizer: every run of horizontal whitespace (spaces, tabs; not newlines) becomes one space;
- pre-tokenizer: newlines are tokens of their own; spaces become a ``▁`` prefix on the next word (``Metaspace``, as
  SentencePiece does, so decoding restores them exactly); digit runs are split off (one token per number, e.g.
  ``02`` ``:`` ``07`` ``:`` ``00`` and ``51`` ``%``; or one token per digit with ``split_digits=True``); punctuation
  (``: , . ? %`` ...) is split off; hyphenated words stay whole (``▁top-left`` is one token);
- model: ``WordLevel`` with ``<unk>`` for anything outside the vocabulary;
- post-processor: ``<s>`` is prepended (as Llama does); no ``</s>`` is appended (the caller adds it where a text ends);
- decoder: ``Metaspace`` (tokens are concatenated, ``▁`` becomes a space).

The vocabulary is built deterministically from every phrasing in :mod:`uvlm.data.texts` and every attribute value
(all times' numbers, battery values 0..100, corners, weathers), plus digits 0..9, the ``<image>`` placeholder and
``\\n``. Each word exists with and without its ``▁`` prefix (a word after a newline has none). Order: the special
tokens ``<pad>`` (id 0), ``<s>`` (1), ``</s>`` (2), ``<unk>`` (3), then ``<image>``, then all other tokens sorted.

Round trip: ``tok.decode(tok(t).input_ids, skip_special_tokens=True) == normalize_text(t)`` for every SmartWatch text,
where :func:`normalize_text` collapses runs of spaces/tabs into one space and drops leading spaces and tabs.
"""

from __future__ import annotations

import re
import string
from typing import Iterable, Sequence

from uvlm.data import texts
from uvlm.data.attributes import CORNERS, N_HOURS, WEATHERS
from uvlm.errors import require

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
META = "\u2581"  # the SentencePiece word-boundary mark


def normalize_text(text: str) -> str:
    """The whitespace normalisation the tokenizer applies: runs of spaces/tabs -> one space; leading ones dropped."""
    return re.sub(r"[^\S\n]+", " ", text).lstrip(" ")


def _pipeline(split_digits: bool):
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    normalizer = normalizers.Replace(Regex(r"[^\S\n]+"), " ")
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Metaspace(replacement=META, prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(r"\d" if split_digits else r"\d+"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[^\w\s\u2581\-]"), behavior="isolated"),
    ])
    decoder = decoders.Metaspace(replacement=META, prepend_scheme="first", split=True)
    return normalizer, pre, decoder


def _value_texts() -> list[str]:
    """Every attribute value as it appears in text (times cover every hour, minute and second number)."""
    values = list(WEATHERS) + list(CORNERS)
    values += [f"{n % N_HOURS:02d}:{n:02d}:{n:02d}" for n in range(60)]
    values += [f"{b}%" for b in range(101)]
    return values


def _corpus() -> list[str]:
    """All phrasings of :mod:`uvlm.data.texts`, each filled with every value, plus joining words and punctuation."""
    out: list[str] = []
    values = _value_texts()
    plain = list(texts.CAPTION_QUESTIONS) + list(texts.CAPTION_NO_TIME) + list(texts.INSTRUCTION_NO_TIME)
    for qs in texts.QUESTIONS.values():
        plain += list(qs)
    templates = list(texts.CAPTION_TIME) + list(texts.INSTRUCTION_TIME)
    for frags in texts.FRAGMENTS.values():
        templates += list(frags)
    out += plain
    for t in templates:
        out += [t.format(v=v) for v in values]
    out += values
    out.append("A, B, and C.")  # the joining words and punctuation of ``texts._sentence``
    return out


def vocabulary(split_digits: bool = False, extra_words: Iterable[str] = ()) -> dict[str, int]:
    """The token -> id map (deterministic; see the module docstring for the order)."""
    _, pre, _ = _pipeline(split_digits)
    tokens: set[str] = set(string.digits) | {"\n", META}
    for text in list(_corpus()) + [str(w) for w in extra_words]:
        for piece, _ in pre.pre_tokenize_str(normalize_text(text)):
            tokens.add(piece)
    # every word also without its boundary mark (after a newline) and with it (after a space)
    words = {t[1:] if t.startswith(META) else t for t in tokens if t not in ("\n", META)}
    tokens |= words | {META + w for w in words if re.fullmatch(r"[\w\-]+", w)}
    tokens.discard("")
    ordered = list(SPECIAL_TOKENS) + [texts.IMAGE_TOKEN] + sorted(tokens - set(SPECIAL_TOKENS) - {texts.IMAGE_TOKEN})
    return {t: i for i, t in enumerate(ordered)}


def build_tokenizer(split_digits: bool = False, extra_words: Sequence[str] = (), model_max_length: int = 512):
    """Build the SmartWatch word-level tokenizer.

    Args:
        split_digits: one token per digit (``0``..``9``) instead of one token per number (``02``, ``51``, ``100``).
        extra_words: more texts whose tokens join the vocabulary (for example chat role words of an LLM prompt).
        model_max_length: the ``model_max_length`` of the returned tokenizer.

    Returns:
        A :class:`transformers.PreTrainedTokenizerFast` with ``pad/bos/eos/unk`` tokens set, padding on the right.
    """
    from tokenizers import AddedToken, Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    require(isinstance(model_max_length, int) and model_max_length > 0,
            f"model_max_length must be a positive integer, got {model_max_length!r}")
    vocab = vocabulary(split_digits, extra_words)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = _pipeline(split_digits)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(texts.IMAGE_TOKEN, special=False, normalized=False, single_word=False)])
    bos_id = vocab[BOS]
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   padding_side="right", model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False)
