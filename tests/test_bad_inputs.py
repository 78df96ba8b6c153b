"""A catalogue of bad inputs: every row is one command line that must fail cleanly.

Each row runs the real ``uvlm`` command in-process and checks four things: exit code 2; stderr ends in one line
``uvlm...: error: <message>`` whose message starts with the row's expected words; no traceback anywhere; and
nothing new (and nothing changed) in the row's own working folder, nor in the shared split and run folders.

Placeholders in a row's arguments: ``{ws}`` the row's own empty working folder (also the current directory),
``{file}`` a regular file in it, ``{dir}`` an empty folder in it, ``{split}`` / ``{test}`` a small train / test
split, ``{run}`` a small trained run (read only), ``{copy}`` a private copy of that run (for rows that damage it).
A row's ``setup`` writes what else it needs into ``{ws}`` before the snapshot is taken.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from _fakes import tiny_config
from uvlm.cli.main import main
from uvlm.io import sha256_file

pytestmark = pytest.mark.usefixtures("fake_vision")

CKPT = "checkpoints/step-000002"


# ----- setups: files a row needs in its working folder -------------------------------------------------------------
def _config(**dotted) -> Callable[[Path], None]:
    """Write ``{ws}/c.json``: the tiny run config with ``dotted`` keys (``"lora.enabled"``) set to raw JSON values."""

    def setup(ws: Path) -> None:
        d = tiny_config("VQ-VQ", steps=2).to_dict()
        for key, value in dotted.items():
            *parents, last = key.split(".")
            node = d
            for p in parents:
                node = node[p]
            node[last] = value
        (ws / "c.json").write_text(json.dumps(d))

    return setup


def _raw_config(text: str, name: str = "c.json") -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        (ws / name).write_text(text)

    return setup


DEEP = "[" * 100_000 + "]" * 100_000


class _Payload:
    """Unpickling this would create ``PWNED`` in the working folder; weights_only loading must refuse it."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _damage(name: str, data: Callable[[Path], bytes], rehash: bool = True) -> Callable[[Path], None]:
    """Replace one file of the copied run's checkpoint; with ``rehash`` its hash in state.json is updated to match
    (an attacker or a careless edit), so only loading the file can catch it."""

    def setup(ws: Path) -> None:
        ck = ws / "copy" / CKPT
        (ck / name).write_bytes(data(ws))
        if rehash:
            state = json.loads((ck / "state.json").read_text())
            state["files"][name] = sha256_file(ck / name)
            (ck / "state.json").write_text(json.dumps(state))

    return setup


def _torch_bytes(obj) -> Callable[[Path], bytes]:
    def make(ws: Path) -> bytes:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    return make


def _malicious(ws: Path) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"state": _Payload(str(ws / "PWNED"))}, buf)
    return buf.getvalue()


def _raw_pickle(ws: Path) -> bytes:
    return pickle.dumps(_Payload(str(ws / "PWNED")))


def _mkdir(*names: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        for n in names:
            (ws / n).mkdir(parents=True, exist_ok=True)

    return setup


def _artifact(config_text: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        from safetensors.torch import save_file
        import torch

        (ws / "art").mkdir()
        save_file({"w": torch.zeros(2)}, str(ws / "art" / "model.safetensors"))
        (ws / "art" / "config.json").write_text(config_text)

    return setup


def _split_copy(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        shutil.copytree(ws.parent / "shared" / "test", ws / "sp")
        m = json.loads((ws / "sp" / "manifest.json").read_text())
        edit(m)
        (ws / "sp" / "manifest.json").write_text(json.dumps(m))

    return setup


def _predictions(text: str) -> Callable[[Path], None]:
    return _raw_config(text, "p.jsonl")


def _nonempty(ws: Path) -> None:
    (ws / "dir" / "notes.txt").write_text("my notes\n")


@dataclass
class Row:
    id: str
    argv: str
    expect: str
    setup: Callable[[Path], None] | None = None
    copy: bool = False


GEN = "data generate {ws}/out --vqa 2 --caption 2 --generation 2 --resolution 48 --workers 1 --quiet"
TRAIN = "train --config {ws}/c.json --out {ws}/r --quiet"

ROWS = [
    # ----- data generate ----------------------------------------------------------------------------------------
    Row("generate-under-file", "data generate {file}/out --vqa 2 --caption 2 --generation 2 --workers 1 --quiet",
        "cannot write"),
    Row("generate-out-is-file", "data generate {file} --vqa 2 --workers 1 --quiet", "cannot write"),
    Row("generate-under-proc", "data generate /proc/uvlm-bad/out --vqa 2 --workers 1 --quiet", "cannot write"),
    Row("generate-resolution-huge", GEN.replace("--resolution 48", "--resolution 100000"), "argument --resolution"),
    Row("generate-resolution-negative", GEN.replace("--resolution 48", "--resolution -5"), "argument --resolution"),
    Row("generate-resolution-word", GEN.replace("--resolution 48", "--resolution big"), "argument --resolution"),
    Row("generate-seed-negative", GEN + " --seed -1", "argument --seed"),
    Row("generate-workers-huge", GEN.replace("--workers 1", "--workers 100000"), "argument --workers"),
    Row("generate-shard-size-zero", GEN + " --shard-size 0", "argument --shard-size"),
    Row("generate-count-huge", GEN.replace("--vqa 2", "--vqa 1e15"), "argument --vqa"),
    Row("generate-count-negative", GEN.replace("--vqa 2", "--vqa -3"), "argument --vqa"),
    Row("generate-bias-unknown", GEN + " --bias colour", "argument --bias"),
    Row("generate-bias-share", GEN + " --bias weather:2", "argument --bias"),
    Row("generate-not-empty", GEN.replace("{ws}/out", "{dir}"), "output folder", _nonempty),
    # ----- data preview -----------------------------------------------------------------------------------------
    Row("preview-under-file", "data preview {file}/sheet.png -n 2", "cannot write"),
    Row("preview-out-is-folder", "data preview {ws}/sheet.png -n 2", "cannot write", _mkdir("sheet.png")),
    Row("preview-under-proc", "data preview /proc/uvlm-bad/sheet.png -n 2", "cannot write"),
    Row("preview-n-huge", "data preview {ws}/sheet.png -n 100000000", "argument -n"),
    Row("preview-resolution-huge", "data preview {ws}/sheet.png -n 2 --resolution 100000", "argument --resolution"),
    Row("preview-from-missing", "data preview {ws}/sheet.png --from {ws}/nosplit", "split folder"),
    Row("preview-from-file", "data preview {ws}/sheet.png --from {file}", "split folder"),
    Row("preview-columns-zero", "data preview {ws}/sheet.png --columns 0", "argument --columns"),
    Row("preview-not-png", "data preview {ws}/sheet.jpg -n 2", "preview output"),
    # ----- data info ------------------------------------------------------------------------------------------------
    Row("info-missing", "data info {ws}/nosplit", "split folder"),
    Row("info-file", "data info {file}", "split folder"),
    Row("info-no-manifest", "data info {dir}", "{dir} is not a uvlm split"),
    Row("info-manifest-folder", "data info {ws}/sp", "{ws}/sp/manifest.json is a folder", _mkdir("sp/manifest.json")),
    Row("info-manifest-deep", "data info {ws}/sp", "unreadable", lambda ws: (_mkdir("sp")(ws), _raw_config(
        DEEP, "sp/manifest.json")(ws))),
    Row("info-counts-edited", "data info {ws}/sp", "split {ws}/sp is inconsistent",
        _split_copy(lambda m: m["counts"].update(vqa=m["counts"]["vqa"] + 5))),
    # ----- data export-llava ------------------------------------------------------------------------------------
    Row("export-under-file", "data export-llava {test} {file}/out", "cannot write"),
    Row("export-out-is-file", "data export-llava {test} {file}", "cannot write"),
    Row("export-under-proc", "data export-llava {test} /proc/uvlm-bad/out", "cannot write"),
    Row("export-split-is-file", "data export-llava {file} {ws}/out", "split folder"),
    Row("export-split-missing", "data export-llava {ws}/nosplit {ws}/out", "split folder"),
    # ----- score ----------------------------------------------------------------------------------------------------
    Row("score-test-missing", "score --test {ws}/none --predictions {file}", "test split folder"),
    Row("score-test-is-file", "score --test {file} --predictions {file}", "test split folder"),
    Row("score-predictions-missing", "score --test {test} --predictions {ws}/none.jsonl", "predictions file"),
    Row("score-predictions-folder", "score --test {test} --predictions {dir}", "predictions file"),
    Row("score-predictions-deep", "score --test {test} --predictions {ws}/p.jsonl", "{ws}/p.jsonl: line 1",
        _predictions(DEEP + "\n")),
    Row("score-predictions-not-json", "score --test {test} --predictions {ws}/p.jsonl", "{ws}/p.jsonl: line 1",
        _predictions("hello\n")),
    Row("score-counts-edited", "score --test {ws}/sp --predictions {file}", "split {ws}/sp is inconsistent",
        _split_copy(lambda m: m["counts"].update(vqa=m["counts"]["vqa"] + 5))),
    # ----- train: config files ----------------------------------------------------------------------------------
    Row("train-config-folder", "train --config {dir}", "config file"),
    Row("train-config-missing", "train --config {ws}/none.json", "config file"),
    Row("train-config-deep", "train --config {ws}/c.json", "config file", _raw_config(DEEP)),
    Row("train-config-deep-object", "train --config {ws}/c.json", "config file",
        _raw_config('{"optim": ' * 50_000 + "1" + "}" * 50_000)),
    Row("train-config-list", "train --config {ws}/c.json", "run config must be a JSON object", _raw_config("[1, 2]")),
    Row("train-config-not-utf8", "train --config {ws}/c.json", "config file",
        lambda ws: (ws / "c.json").write_bytes(b"\xff\xfe{")),
    Row("train-lora-enabled-string", TRAIN, "lora.enabled must be true or false", _config(**{"lora.enabled": "yes"})),
    Row("train-lora-enabled-int", TRAIN, "lora.enabled must be true or false", _config(**{"lora.enabled": 1})),
    Row("train-variant-bogus", TRAIN, "unknown variant 'Bogus'", _config(variant="Bogus")),
    Row("train-variant-mismatch", TRAIN, "variant 'SigLIP_u' does not match", _config(variant="SigLIP_u")),
    Row("train-threads-huge", TRAIN, "runtime.threads must be", _config(**{"runtime.threads": 1_000_000})),
    Row("train-threads-string", TRAIN, "runtime.threads must be", _config(**{"runtime.threads": "4"})),
    Row("train-resolution-huge", TRAIN, "resolution 100000", _config(**{"data.train.resolution": 100_000})),
    Row("train-resolution-float", TRAIN, "resolution", _config(**{"data.train.resolution": 64.5})),
    Row("train-count-bool", TRAIN, "n_vqa must be", _config(**{"data.train.n_vqa": True})),
    Row("train-count-huge", TRAIN, "n_vqa must be", _config(**{"data.train.n_vqa": 10**15})),
    Row("train-lr-string", TRAIN, "optim.lr_llm must be", _config(**{"optim.lr_llm": "fast"})),
    Row("train-lr-nan", TRAIN, "optim.lr_llm must be", _raw_config('{"optim": {"lr_llm": NaN}}')),
    Row("train-lr-infinite", TRAIN, "optim.lr_llm must be", _raw_config('{"optim": {"lr_llm": Infinity}}')),
    Row("train-epochs-string", TRAIN, "optim.epochs must be", _config(**{"optim.epochs": "2"})),
    Row("train-betas-short", TRAIN, "optim.betas must be", _config(**{"optim.betas": [0.9]})),
    Row("train-schedule-number", TRAIN, "optim.schedule must be a string", _config(**{"optim.schedule": 3})),
    Row("train-mode-bogus", TRAIN, "unknown mode", _config(mode="Both")),
    Row("train-tensorboard-string", TRAIN, "log.tensorboard must be true or false",
        _config(**{"log.tensorboard": "no"})),
    Row("train-at-end-int", TRAIN, "eval.at_end must be true or false", _config(**{"eval.at_end": 1})),
    Row("train-detach-string", TRAIN, "model.detach must be true or false", _config(**{"model.detach": "false"})),
    Row("train-alpha-string", TRAIN, "model.alpha must be", _config(**{"model.alpha": "1"})),
    Row("train-llm-preset-number", TRAIN, "model.llm.preset must be a string", _config(**{"model.llm.preset": 123})),
    Row("train-positions-huge", TRAIN, "model.llm.max_position_embeddings must be",
        _config(**{"model.llm.max_position_embeddings": 10**12})),
    Row("train-lora-rank-huge", TRAIN, "lora.r must be", _config(**{"lora.r": 10**9})),
    Row("train-lora-targets-string", TRAIN, "lora.target_modules must be",
        _config(**{"lora.target_modules": "q_proj"})),
    Row("train-section-not-object", TRAIN, "optim must be a JSON object", _config(optim=[1])),
    Row("train-seed-string", TRAIN, "seed must be", _config(seed="0")),
    Row("train-out-dir-number", TRAIN.replace(" --out {ws}/r", ""), "out_dir must be", _config(out_dir=5)),
    # ----- train: flags and output folders ----------------------------------------------------------------------
    Row("train-batch-huge", TRAIN + " --batch-size 1000000000", "argument --batch-size", _config()),
    Row("train-steps-huge", TRAIN + " --steps 1000000000000", "argument --steps", _config()),
    Row("train-samples-huge", TRAIN + " --samples 1e15", "argument --samples", _config()),
    Row("train-out-under-file", "train --config {ws}/c.json --out {file}/r --quiet", "cannot write", _config()),
    Row("train-out-is-file", "train --config {ws}/c.json --out {file} --quiet", "cannot write", _config()),
    Row("train-out-under-proc", "train --config {ws}/c.json --out /proc/uvlm-bad/r --quiet", "cannot write",
        _config()),
    Row("train-out-not-a-run", "train --config {ws}/c.json --out {dir} --quiet", "run folder",
        lambda ws: (_config()(ws), _nonempty(ws))),
    # ----- train --resume -------------------------------------------------------------------------------------------
    Row("resume-file", "train --resume {file}", "cannot resume"),
    Row("resume-missing", "train --resume {ws}/none", "cannot resume"),
    Row("resume-optimizer-malicious", "train --resume {copy} --steps 3 --quiet",
        "checkpoint step-000002 is corrupt or unsafe", _damage("optimizer.pt", _malicious), copy=True),
    Row("resume-optimizer-raw-pickle", "train --resume {copy} --steps 3 --quiet",
        "checkpoint step-000002 is corrupt or unsafe", _damage("optimizer.pt", _raw_pickle), copy=True),
    Row("resume-rng-garbage", "train --resume {copy} --steps 3 --quiet",
        "checkpoint step-000002 is corrupt or unsafe", _damage("rng.pt", lambda ws: os.urandom(300)), copy=True),
    Row("resume-rng-wrong-structure", "train --resume {copy} --steps 3 --quiet",
        "checkpoint step-000002 is corrupt or unsafe", _damage("rng.pt", _torch_bytes([1, 2, 3])), copy=True),
    Row("resume-rng-malicious", "train --resume {copy} --steps 3 --quiet",
        "checkpoint step-000002 is corrupt or unsafe", _damage("rng.pt", _malicious), copy=True),
    Row("resume-scheduler-wrong-structure", "train --resume {copy} --steps 3 --quiet",
        "checkpoint step-000002 is corrupt or unsafe", _damage("scheduler.pt", _torch_bytes("hello")), copy=True),
    Row("resume-optimizer-tampered", "train --resume {copy} --steps 3 --quiet", "checkpoint",
        _damage("optimizer.pt", lambda ws: b"garbage", rehash=False), copy=True),
    Row("resume-config-deep", "train --resume {copy} --quiet", "run config '{copy}/config.json' is nested too deeply",
        lambda ws: (ws / "copy" / "config.json").write_text(DEEP), copy=True),
    Row("resume-checkpoint-without-resume", "train --config {ws}/c.json --checkpoint step-000002", "--checkpoint needs",
        _config()),
    Row("resume-checkpoint-missing", "train --resume {copy} --checkpoint step-000009 --quiet",
        "checkpoint 'step-000009' not found", copy=True),
    # ----- ask / draw / eval ------------------------------------------------------------------------------------
    Row("ask-temperature-inf", "ask {run} {ws}/w.png q? --temperature inf", "argument --temperature"),
    Row("ask-temperature-nan", "ask {run} {ws}/w.png q? --temperature nan", "argument --temperature"),
    Row("ask-temperature-negative", "ask {run} {ws}/w.png q? --temperature -1", "argument --temperature"),
    Row("ask-top-k-huge", "ask {run} {ws}/w.png q? --top-k 10000000000", "argument --top-k"),
    Row("ask-max-tokens-huge", "ask {run} {ws}/w.png q? --max-new-tokens 1000000000", "argument --max-new-tokens"),
    Row("ask-image-folder", "ask {run} {dir} q?", "image"),
    Row("ask-image-missing", "ask {run} {ws}/none.png q?", "image"),
    Row("ask-run-is-file", "ask {file} {ws}/w.png q?", "run '{file}' is a file"),
    Row("draw-temperature-inf", "draw {run} Draw. {ws}/o.png --temperature inf", "argument --temperature"),
    Row("draw-under-file", "draw {run} Draw. {file}/o.png", "cannot write"),
    Row("draw-out-is-folder", "draw {run} Draw. {ws}/o.png", "cannot write", _mkdir("o.png")),
    Row("draw-under-proc", "draw {run} Draw. /proc/uvlm-bad/o.png", "cannot write"),
    Row("draw-run-is-file", "draw {file} Draw. {ws}/o.png", "run '{file}' is a file"),
    Row("draw-run-missing", "draw {ws}/none Draw. {ws}/o.png", "run '{ws}/none' does not exist"),
    Row("eval-checkpoint-bogus", "eval {run} --checkpoint step-000009", "checkpoint 'step-000009' not found"),
    Row("eval-checkpoint-path", "eval {run} --checkpoint ../../run/checkpoints/step-000002",
        "checkpoint '../../run/checkpoints/step-000002' is not a checkpoint name"),
    Row("ask-checkpoint-negative", "ask {run} {ws}/w.png q? --checkpoint -3", "checkpoint '-3' is not a checkpoint name"),
    Row("eval-questions-huge", "eval {run} --questions 1000000000", "argument --questions"),
    Row("eval-inception-folder", "eval {run} --generation 2 --inception {dir}", "Inception weights file"),
    # ----- run / report / recipes -------------------------------------------------------------------------------
    Row("run-workers-negative", "run affine --workers -1 --dry-run", "argument --workers"),
    Row("run-workers-huge", "run affine --workers 100000 --dry-run", "argument --workers"),
    Row("run-seeds-zero", "run affine --seeds 0 --dry-run", "--seeds must be at least 1"),
    Row("run-seeds-huge", "run affine --seeds 1000000 --dry-run", "argument --seeds"),
    Row("run-recipe-unknown", "run bogus --dry-run", "unknown recipe"),
    Row("run-preset-unknown", "run affine --preset bogus --dry-run", "unknown preset"),
    Row("run-tables-only-nothing", "run transfer-weather --root {ws}/root --tables-only", "no run records"),
    Row("run-tables-only-existing-root", "run transfer-weather --root {dir} --tables-only", "no run records"),
    Row("run-root-under-file", "run transfer-weather --root {file}/root --tables-only", "cannot write"),
    Row("report-nothing", "report transfer-weather --root {ws}/root", "no results"),
    # ----- vision, quickstart, import-llm -------------------------------------------------------------------------
    Row("vision-info-unknown-kind", "vision info {ws}/art", "{ws}/art holds an unknown artifact kind",
        _artifact('{"kind": "bogus"}')),
    Row("vision-info-config-deep", "vision info {ws}/art", "{ws}/art/config.json", _artifact(DEEP)),
    Row("vision-info-config-list", "vision info {ws}/art", "{ws}/art/config.json", _artifact("[1]")),
    Row("vision-info-file", "vision info {file}", "{file} is a file"),
    Row("vision-info-missing", "vision info {ws}/none", "{ws}/none is not a uvlm vision checkpoint folder"),
    Row("vision-train-preset", "vision train --preset huge --what vq", "unknown vision preset"),
    Row("quickstart-seeds-zero", "quickstart --seeds 0", "argument --seeds"),
    Row("quickstart-workers-negative", "quickstart --workers -1", "argument --workers"),
    Row("import-llm-missing", "import-llm {ws}/none.gguf {ws}/out", "GGUF source"),
    Row("import-llm-source-folder", "import-llm {dir} {ws}/out", "GGUF source"),
]


# ----- shared inputs ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A small train split, a small test split and a 2-step trained VQ-VQ run (fake vision), made once."""
    import _fakes
    import uvlm.train.data
    from uvlm.train.loop import train

    root = tmp_path_factory.mktemp("bad-inputs") / "shared"
    root.mkdir()
    common = ["--resolution", "48", "--workers", "1", "--quiet"]
    assert main(["data", "generate", str(root / "split"), "--vqa", "3", "--caption", "2", "--generation", "2",
                 *common]) == 0
    assert main(["data", "generate", str(root / "test"), "--split", "test", "--vqa", "4", "--generation", "2",
                 *common]) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uvlm.train.data, "get_vision_source", _fakes.fake_vision_source)
        train(tiny_config("VQ-VQ", steps=2), root / "run", quiet=True)
    return root


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder in folders:
        for p in [folder, *folder.rglob("*")]:
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns if p.is_file() else 0)
    return out


def test_catalogue_is_large_and_unique():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids))
    assert len(ROWS) >= 60


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, shared: Path, tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "shared").symlink_to(shared)  # for setups that copy a shared split
    (ws / "file.txt").write_text("a regular file\n")
    (ws / "dir").mkdir()
    if row.copy:
        shutil.copytree(shared / "run", ws / "copy")
    if row.setup is not None:
        row.setup(ws)
    from uvlm.data.smartwatch import SmartWatch

    SmartWatch(tiny_config().data.test).image(0).save(ws / "w.png")
    values = {"ws": str(ws), "file": str(ws / "file.txt"), "dir": str(ws / "dir"), "split": str(shared / "split"),
              "test": str(shared / "test"), "run": str(shared / "run"), "copy": str(ws / "copy")}
    argv = [a.format(**values) for a in row.argv.split()]
    expect = row.expect.format(**values)
    monkeypatch.chdir(ws)
    before = _snapshot(ws, shared)
    capsys.readouterr()

    code = main(argv)

    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert last.startswith("uvlm") and ": error: " in last, err
    message = last.split(": error: ", 1)[1]
    assert message.startswith(expect), f"expected {expect!r}, got {message!r}"
    assert code == 2, err
    assert _snapshot(ws, shared) == before, "the failing command wrote or changed files"
    assert not (ws / "PWNED").exists()
