"""A uvlm run as an lmms-eval model: ``lmms-eval --model uvlm --model_args run=RUN[,checkpoint=STEP,batch_size=N]``.

``RUN`` may also be a stage folder of the LLaVA extension (``uvlm llava train``, docs/llava.md): it is loaded with
:func:`uvlm.train.llava.load_llava_run`, and each image keeps its size until LLaVA's own squaring and image processor.

The run folder is loaded with :func:`uvlm.train.checkpoint.load_run` (the latest checkpoint unless ``checkpoint``
names one) and answers with :func:`uvlm.model.generate.answer`, exactly as ``uvlm ask`` and ``uvlm eval`` do: the
task's text becomes the question of ``<s> <image> x N USER: {question} ASSISTANT:``, the document's first image is
resized to the run's encoder resolution (RGB, bicubic) and encoded by the run's understanding encoder.

- ``generate_until``: greedy unless the request asks ``do_sample`` with a positive ``temperature``
  (then ``temperature``, ``top_k`` and the ``seed`` model argument); ``max_new_tokens`` from the request (default
  the ``max_new_tokens`` model argument); the answer is cut at the first ``until`` string.
- ``loglikelihood``: the sum of the log-probabilities of the continuation's tokens after the prompt, and whether
  greedy decoding would produce exactly them (one forward pass per request).
- ``generate_until_multi_round``: not supported (uvlm models answer one question per image).

lmms-eval imports this module through the ``lmms_eval.models`` entry point of the uvlm package (see
:func:`uvlm.integrations.lmms_eval.plugin.manifests`); importing it registers the class under ``uvlm``.
"""

from __future__ import annotations

from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from uvlm.errors import UserError, require

IMAGE_PLACEHOLDER = "<image>"


def _as_int(name: str, value: Any, minimum: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"model argument {name}={value!r} is not an integer: pass e.g. {name}={max(minimum, 1)}") \
            from None
    require(v >= minimum, f"model argument {name}={v} must be at least {minimum}")
    return v


class _LlavaImages:
    """The understanding side of a LLaVA-extension run as the model class reads a vision source: images of any size,
    squared and processed by LLaVA's image processor, then encoded by the run's own CLIP tower."""

    resolution = None

    def __init__(self, model) -> None:
        self.model = model

    def encode_cached(self, images) -> torch.Tensor:
        return self.model.encode_images(self.model.preprocess(list(images)))

    def to_inputs(self, features: torch.Tensor) -> torch.Tensor:
        return features


@register_model("uvlm")
class UvlmLMM(lmms):
    """A trained uvlm run (``run=`` folder) behind lmms-eval's model interface."""

    is_simple = True

    def __init__(self, run: str | None = None, checkpoint: str | int | None = None, batch_size: int | str = 16,
                 max_new_tokens: int | str = 24, seed: int | str = 0, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__()
        from uvlm.train.checkpoint import load_run

        require(run is not None and str(run).strip() != "",
                "the uvlm model needs a run folder: pass --model_args run=RUN (a folder written by uvlm train)")
        unknown = sorted(k for k in kwargs if k != "max_batch_size")  # lmms-eval passes max_batch_size
        require(not unknown, f"unknown uvlm model argument(s) {', '.join(unknown)}: use run, checkpoint, batch_size, "
                             f"max_new_tokens, seed, device")
        if isinstance(checkpoint, str) and checkpoint.strip().lstrip("-").isdigit():
            checkpoint = int(checkpoint)
        self.batch_size_per_gpu = _as_int("batch_size", batch_size, 1)
        self.max_new_tokens = _as_int("max_new_tokens", max_new_tokens, 1)
        self.seed = _as_int("seed", seed, 0)
        from pathlib import Path

        if (Path(str(run)).expanduser() / "llava_run.json").is_file():  # a stage of the LLaVA extension
            from uvlm.train.llava import load_llava_run

            self.loaded = load_llava_run(str(run), checkpoint)
            self.model = self.loaded.model
            self.source = _LlavaImages(self.model)
        else:
            self.loaded = load_run(str(run), checkpoint)
            self.model = self.loaded.model
            self.source = self.loaded.sources.understanding
        if device != "cpu":
            self.model.to(device)
        require(self.source is not None, f"run {run!r} has no understanding encoder (a generation-only model): it "
                                         f"cannot answer questions about images")
        self.run = str(run)

    # ----- helpers ---------------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def _doc_image(self, doc_to_visual, doc_id: int, task: str, split: str):
        from PIL import Image

        visuals = doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else None
        if visuals is not None and not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        images = [v for v in (visuals or []) if isinstance(v, Image.Image)]
        require(len(images) > 0, f"document {doc_id} of task {task!r} has no image: a uvlm model answers questions "
                                 f"about one image; pick an image task")
        image = images[0].convert("RGB")
        if self.source.resolution is None:  # the model's own image processor sizes it
            return image
        r = int(self.source.resolution)
        return image if image.size == (r, r) else image.resize((r, r), Image.Resampling.BICUBIC)

    @staticmethod
    def _question(context: str) -> str:
        return " ".join(context.replace(IMAGE_PLACEHOLDER, " ").split())

    @torch.no_grad()
    def _features(self, images) -> torch.Tensor:
        return self.source.to_inputs(self.source.encode_cached(images))

    def _sampling(self, gen_kwargs: dict[str, Any]):
        from uvlm.model.config import SamplingConfig

        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        if not gen_kwargs.get("do_sample", False) or temperature <= 0:
            return SamplingConfig(seed=self.seed)
        return SamplingConfig(temperature=temperature, top_k=int(gen_kwargs.get("top_k", 0) or 0), seed=self.seed)

    # ----- lmms-eval interface ---------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        from uvlm.model.generate import answer

        out: list[str | None] = [None] * len(requests)
        # one batch per distinct generation setting, in request order within it
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted((req.args[1] or {}).items())), []).append(i)
        for idx in groups.values():
            gen_kwargs = dict(requests[idx[0]].args[1] or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
            sampling = self._sampling(gen_kwargs)
            for b in range(0, len(idx), self.batch_size):
                chunk = idx[b:b + self.batch_size]
                feats = self._features([self._doc_image(*requests[i].args[2:6]) for i in chunk])
                questions = [self._question(requests[i].args[0]) for i in chunk]
                texts = answer(self.model, feats, questions, sampling=sampling, max_new_tokens=max_new)
                for i, text in zip(chunk, texts):
                    for stop in until:
                        if stop:
                            text = text.split(stop)[0]
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], gen_kwargs), text)
        return [t if t is not None else "" for t in out]

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        model = self.model
        seq = model.sequences
        results = []
        for req in requests:
            context, continuation, doc_to_visual, doc_id, task, split = req.args[:6]
            if callable(continuation):  # loglikelihood tasks pass doc_to_target
                continuation = continuation(self._doc(task, split, doc_id))
            feats = self._features([self._doc_image(doc_to_visual, doc_id, task, split)])
            n = feats.shape[1]
            prompt = seq.answer_prompt(self._question(context), n)
            target = seq._text(continuation.strip())
            require(len(target) > 0, f"empty continuation in a loglikelihood request of task {task!r}")
            ids = torch.tensor([prompt + target], dtype=torch.long, device=model.device)
            emb = model.text_embeddings(ids)
            und = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
            und[0, 1:1 + n] = True
            emb = emb.masked_scatter(und.unsqueeze(-1), model.embed_understanding(feats.to(model.device)).to(emb.dtype))
            logits = model.llm(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).logits[0].float()
            # the logits at position t predict token t + 1
            pred = logits[len(prompt) - 1:len(prompt) - 1 + len(target)]
            logp = torch.log_softmax(pred, dim=-1)
            tgt = torch.tensor(target, device=logp.device)
            total = float(logp.gather(1, tgt[:, None]).sum())
            greedy = bool((pred.argmax(-1) == tgt).all())
            results.append((total, greedy))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise UserError("the uvlm model does not answer multi-round tasks: it answers one question per image")


__all__ = ["UvlmLMM"]
