"""Bridges to outside evaluation harnesses: lmms-eval (both directions) and VLMEvalKit (a benchmark TSV).

- :mod:`uvlm.integrations.lmms_eval`: SmartWatch as an lmms-eval task scored with uvlm's exact VQA score, and uvlm
  runs as an lmms-eval model (``lmms-eval --model uvlm --model_args run=RUN``).
- :mod:`uvlm.integrations.vlmevalkit`: a test split as a VLMEvalKit TSV (index, base64 image, question, answer).

Neither harness is a dependency of uvlm: only :mod:`uvlm.integrations.lmms_eval.model` imports lmms-eval.
"""
