"""From a dataset's samples (+ cached vision tensors) to token sequences, labels and mixed batches.

Template (plain text; ``{user}`` / ``{assistant}`` come from :class:`TemplateConfig`, default ``USER:`` and
``ASSISTANT:``). Pieces are tokenized separately and joined, so training and inference use the exact same ids:

- understanding (VQA and caption samples)::

      <s> <image> x N_in  USER: {q1} ASSISTANT: {a1} </s>  USER: {q2} ASSISTANT: {a2} </s> ...

  ``labels`` are set on the answer tokens and their ``</s>`` only (-100 elsewhere); the ``N_in`` ``<image>``
  positions take the understanding features (``understanding_mask``).

- generation::

      <s> USER: {instruction} ASSISTANT: <boi> [image] x N_out

  the ``N_out`` image positions (``generation_mask``) take the fed-back target vectors (teacher forcing); the hidden
  state at the position *before* each image position predicts that image token (``<boi>`` predicts token 0, image
  token ``k`` predicts ``k + 1``, the last image token predicts nothing). No text labels unless ``label_boi`` (then
  ``<boi>`` itself is a labelled answer token, so the LM learns to open an image after an instruction).

The vision tokens ``<image>``, ``<boi>`` and ``<eoi>`` are added to the tokenizer as special tokens
(:func:`add_vision_tokens`); their ids are always looked up, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, Sequence

import torch

from uvlm.data.texts import IMAGE_TOKEN, Turn
from uvlm.errors import UserError, require
from uvlm.model.config import TemplateConfig

BOI = "<boi>"
EOI = "<eoi>"
#: Special tokens the model adds to its tokenizer. ``<eoi>`` is reserved (end of image) but not used in sequences yet.
VISION_TOKENS: tuple[str, ...] = (IMAGE_TOKEN, BOI, EOI)

IGNORE = -100
"""Label of a position that is not trained on (the ``ignore_index`` of cross-entropy)."""


def add_vision_tokens(tokenizer) -> int:
    """Add :data:`VISION_TOKENS` to ``tokenizer`` as additional special tokens (keeping any it already has).

    Idempotent. Returns how many new ids the vocabulary gained; the model must then have ``len(tokenizer)`` rows.
    """
    before = len(tokenizer)
    existing = list(getattr(tokenizer, "extra_special_tokens", None) or
                    getattr(tokenizer, "additional_special_tokens", None) or [])
    existing = [str(t) for t in existing]
    missing = [t for t in VISION_TOKENS if t not in existing]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": existing + missing})
    return len(tokenizer) - before


class TextSample(Protocol):
    """What a sequence is built from: any dataset's sample (``task``, ``id``, ``turns``; a generation sample's
    instruction is its first turn's question). The model knows no dataset beyond this."""

    task: str
    id: str
    turns: list[Turn]

    @property
    def instruction(self) -> str: ...


@dataclass(frozen=True)
class TokenIds:
    """The ids of the tokens the sequences use, looked up in the tokenizer."""

    image: int
    boi: int
    eoi: int
    bos: int
    eos: int
    pad: int

    @classmethod
    def lookup(cls, tokenizer) -> "TokenIds":
        ids = {}
        for name, tok in (("image", IMAGE_TOKEN), ("boi", BOI), ("eoi", EOI)):
            i = tokenizer.convert_tokens_to_ids(tok)
            require(i is not None and i != tokenizer.unk_token_id,
                    f"the tokenizer has no {tok} token: call uvlm.model.sequence.add_vision_tokens(tokenizer) first")
            ids[name] = int(i)
        for name in ("bos", "eos"):
            i = getattr(tokenizer, f"{name}_token_id")
            require(i is not None, f"the tokenizer has no {name} token: give it one (e.g. {name}_token='<s>')")
            ids[name] = int(i)
        pad = tokenizer.pad_token_id
        ids["pad"] = int(pad if pad is not None else ids["eos"])
        return cls(**ids)


@dataclass
class Example:
    """One tokenized sample. ``L`` = sequence length."""

    input_ids: torch.Tensor
    """``(L,)`` int64."""
    labels: torch.Tensor
    """``(L,)`` int64, the token at that position if it is trained on, else :data:`IGNORE`."""
    understanding_mask: torch.Tensor
    """``(L,)`` bool, the ``N_in`` positions that take the understanding features."""
    generation_mask: torch.Tensor
    """``(L,)`` bool, the ``N_out`` image positions of a generation sample."""
    features: torch.Tensor | None = None
    """``(N_in, D_in)`` float understanding features, or ``None``."""
    targets: torch.Tensor | None = None
    """``(N_out, D_out)`` float or ``(N_out,)`` int64 generation targets, or ``None``."""


@dataclass
class Batch:
    """A right-padded mixed batch. ``B`` rows, ``L`` positions; ``B_u`` understanding and ``B_g`` generation rows."""

    input_ids: torch.Tensor
    """``(B, L)`` int64; padding is the pad id."""
    attention_mask: torch.Tensor
    """``(B, L)`` int64, 1 on real positions."""
    labels: torch.Tensor
    """``(B, L)`` int64, unshifted (HF convention): position ``p``'s label is predicted from position ``p - 1``."""
    understanding_mask: torch.Tensor
    """``(B, L)`` bool."""
    generation_mask: torch.Tensor
    """``(B, L)`` bool."""
    features: torch.Tensor | None
    """``(B_u, N_in, D_in)`` float: the understanding rows' features, in row order."""
    targets: torch.Tensor | None
    """``(B_g, N_out, ...)``: the generation rows' targets, in row order."""

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                        for f in fields(self)})

    @property
    def num_answer_tokens(self) -> int:
        """How many positions carry a text label (the text loss is a mean over these)."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    @property
    def num_image_tokens(self) -> int:
        """How many image tokens are predicted (the vision loss is a mean over these)."""
        return int(self.generation_mask.sum())


class SequenceBuilder:
    """Tokenizes samples with the template and collates them. Adds the vision tokens to ``tokenizer``."""

    def __init__(self, tokenizer, template: TemplateConfig | None = None):
        self.tokenizer = tokenizer
        self.template = template or TemplateConfig()
        add_vision_tokens(tokenizer)
        self.ids = TokenIds.lookup(tokenizer)
        unk = tokenizer.unk_token_id
        if unk is not None:
            for word in self.template.words():
                require(unk not in self._text(word),
                        f"the tokenizer does not know the template word {word!r}: build it with "
                        f"build_tokenizer(extra_words=TemplateConfig().words()) or change the template")

    def _text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def question_ids(self, question: str) -> list[int]:
        """``USER: {question} ASSISTANT:``."""
        return self._text(f"{self.template.user} {question} {self.template.assistant}")

    def answer_prompt(self, question: str, num_image_tokens: int) -> list[int]:
        """Inference prompt for a one-turn answer: ``<s> <image> x N_in USER: {question} ASSISTANT:``."""
        return [self.ids.bos] + [self.ids.image] * num_image_tokens + self.question_ids(question)

    def image_prompt(self, instruction: str) -> list[int]:
        """Inference prompt for image generation, ending with ``<boi>``."""
        return [self.ids.bos] + self.question_ids(instruction) + [self.ids.boi]

    def understanding(self, turns: Sequence[Turn | tuple[str, str]], features: torch.Tensor) -> Example:
        """A conversation about one image; ``features`` ``(N_in, D_in)`` float."""
        require(len(turns) > 0, "an understanding sample needs at least one question/answer turn")
        _check_tensor(features, "understanding features", 2, floating=True)
        n = features.shape[0]
        ids = [self.ids.bos] + [self.ids.image] * n
        labels = [IGNORE] * len(ids)
        for turn in turns:
            q, a = (turn.question, turn.answer) if isinstance(turn, Turn) else turn
            qi, ai = self.question_ids(q), self._text(a) + [self.ids.eos]
            ids += qi + ai
            labels += [IGNORE] * len(qi) + ai
        und = torch.zeros(len(ids), dtype=torch.bool)
        und[1:1 + n] = True
        return self._example(ids, labels, und, torch.zeros_like(und), features=features)

    def generation(self, instruction: str, targets: torch.Tensor) -> Example:
        """A text-to-image sample; ``targets`` ``(N_out, D_out)`` float or ``(N_out,)`` int64."""
        require(isinstance(targets, torch.Tensor) and targets.ndim in (1, 2) and targets.shape[0] > 0,
                f"generation targets must be a (N_out, D) or (N_out,) tensor, got {getattr(targets, 'shape', None)}")
        n = targets.shape[0]
        prompt = self.image_prompt(instruction)
        ids = prompt + [self.ids.image] * n
        labels = [IGNORE] * len(ids)
        if self.template.label_boi:
            labels[len(prompt) - 1] = self.ids.boi
        gen = torch.zeros(len(ids), dtype=torch.bool)
        gen[len(prompt):] = True
        return self._example(ids, labels, torch.zeros_like(gen), gen, targets=targets)

    def example(self, sample: TextSample, features: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> Example:
        """Dispatch on ``sample.task``: VQA and caption samples need ``features``, generation samples ``targets``."""
        if sample.task == "generation":
            require(targets is not None, f"generation sample {sample.id} needs its cached generation targets")
            return self.generation(sample.instruction, targets)
        require(features is not None, f"{sample.task} sample {sample.id} needs its cached understanding features")
        return self.understanding(sample.turns, features)

    def _example(self, ids, labels, und, gen, features=None, targets=None) -> Example:
        m = self.template.max_length
        if m is not None and len(ids) > m:
            raise UserError(f"a sequence has {len(ids)} tokens, more than max_length={m}: raise max_length "
                            f"or use fewer image tokens")
        return Example(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), und, gen,
                       features, targets)

    def collate(self, examples: Sequence[Example]) -> Batch:
        """Right-pad a mixed list of understanding and generation examples into one :class:`Batch`."""
        require(len(examples) > 0, "cannot collate an empty batch")
        length = max(len(e.input_ids) for e in examples)
        b = len(examples)
        input_ids = torch.full((b, length), self.ids.pad, dtype=torch.long)
        labels = torch.full((b, length), IGNORE, dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        und = torch.zeros((b, length), dtype=torch.bool)
        gen = torch.zeros((b, length), dtype=torch.bool)
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            input_ids[i, :n], labels[i, :n], attention[i, :n] = e.input_ids, e.labels, 1
            und[i, :n], gen[i, :n] = e.understanding_mask, e.generation_mask
        feats = [e.features for e in examples if e.features is not None]
        targs = [e.targets for e in examples if e.targets is not None]
        return Batch(input_ids, attention, labels, und, gen, _stack(feats, "understanding features"),
                     _stack(targs, "generation targets"))


def prediction_mask(generation_mask: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool image positions -> ``(B, L)`` bool positions whose hidden state predicts an image token: the
    position just before each image position (``<boi>`` for token 0, image token ``k`` for token ``k + 1``).
    Row-major order of the true positions = (row, token) order of the batch's targets."""
    out = torch.zeros_like(generation_mask)
    out[:, :-1] = generation_mask[:, 1:]
    return out


def _check_tensor(x, what: str, ndim: int, floating: bool) -> None:
    require(isinstance(x, torch.Tensor) and x.ndim == ndim and (x.is_floating_point() or not floating),
            f"{what} must be a {ndim}-d {'float ' if floating else ''}tensor, got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")


def _stack(tensors: list[torch.Tensor], what: str) -> torch.Tensor | None:
    if not tensors:
        return None
    shapes = {(tuple(t.shape), t.dtype) for t in tensors}
    require(len(shapes) == 1, f"all {what} in a batch must have one shape and dtype, got {sorted(map(str, shapes))}")
    return torch.stack(tensors)
