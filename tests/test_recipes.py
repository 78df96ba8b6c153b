"""Recipes and the sweep runner: every recipe expands at every preset; ``uvlm run`` skips finished runs, survives a
failing run, resumes an interrupted one and refuses a results folder of another recipe version."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from uvlm.cli.main import main
from uvlm.data.config import SplitConfig
from uvlm.errors import UserError
from uvlm.experiments.recipe import (UNBIASED_VQA_SHARE, Preset, expand, load_preset, load_recipe, preset_names,
                                     recipe_names)
from uvlm.experiments.sweep import SweepOptions, run_sweep
from uvlm.train.config import parse_variant

PAPER_PATHS = {"llm": "/models/vicuna-7b", "siglip": "/models/siglip", "vq": "/models/vq_ds16_t2i.pt",
               "kl16": "/models/kl16.ckpt"}


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_loads_and_expands_at_every_preset(name):
    recipe = load_recipe(name)
    assert recipe.command.startswith(f"uvlm run {name}") and recipe.reproduces and "cpu" in recipe.expected
    assert {"paper", "cpu", "cpu-pretrained"} <= set(preset_names())
    for preset_name in preset_names():
        preset = load_preset(preset_name)
        runs = expand(recipe, preset, seeds=3, paths=PAPER_PATHS)
        assert len({(r.id, r.seed) for r in runs}) == len(runs)  # every run has its own identity and folder
        assert len({r.folder for r in runs}) == len(runs)
        for r in runs:
            c = r.config
            v = parse_variant(r.labels["variant"])
            assert (c.mode, c.model.encoder, c.model.target, c.model.detach, c.model.affine) == \
                   (v["mode"], v["encoder"], v["target"], v["detach"], v["affine"])
            assert c.seed == r.seed and c.model.seed == r.seed
            t = c.data.train
            und = r.labels.get("understanding", recipe.data.get("understanding", 120_000))
            assert t.n_vqa + t.n_caption == round(und * preset.data_scale)
            bias = r.labels.get("bias", recipe.data.get("bias"))
            if c.mode == "generation" or bias in ("", "none", None):  # a bias changes understanding data only
                assert t.bias is None
            else:
                share = UNBIASED_VQA_SHARE * r.labels.get("bias_share", 0.25)
                assert t.bias is not None and t.bias.vqa_share == pytest.approx(share)
            if "epochs" in r.labels:
                assert c.optim.epochs == r.labels["epochs"]
            assert ("alpha" in r.labels) == ("alpha" in recipe.axes and c.mode == "mixed")
            if preset_name == "paper":
                assert c.lora.enabled and (c.lora.r, c.lora.alpha) == (128, 256)
                assert c.model.llm.pretrained == PAPER_PATHS["llm"]
                assert c.optim.batch_size == r.labels.get("batch", 393)
            if preset_name == "cpu":
                assert c.model.llm.pretrained is None and not c.lora.enabled
        # the same configs expand to the same ids (skipping finished runs relies on it)
        assert [r.id for r in expand(recipe, preset, 3, PAPER_PATHS)] == [r.id for r in runs]


def test_recipes_sharing_a_model_share_its_run():
    cpu = load_preset("cpu")
    mixed = {(r.group, r.seed): r.id for r in expand(load_recipe("mixed-vs-task-specific"), cpu, 2)}
    affine = {(r.group, r.seed): r.id for r in expand(load_recipe("affine"), cpu, 2)}
    assert mixed[("SigLIP_u", 1)] == affine[("SigLIP_u", 1)]
    assert affine[("SigLIP*_u", 1)] != affine[("SigLIP_u", 1)]


def test_execution_only_settings_keep_a_runs_id():
    from uvlm.experiments.recipe import config_id

    cfg = next(iter(expand(load_recipe("affine"), load_preset("cpu"), 1))).config.to_dict()
    assert cfg["runtime"]["length_groups"] == 4  # the cpu preset's setting
    assert config_id({**cfg, "runtime": {**cfg["runtime"], "length_groups": 1}}) == config_id(cfg)
    assert config_id({**cfg, "seed": cfg["seed"] + 1}) != config_id(cfg)


def test_paper_preset_needs_its_checkpoints():
    with pytest.raises(UserError, match="--path llm=PATH"):
        expand(load_recipe("affine"), load_preset("paper"), 1)


@pytest.mark.parametrize("argv, message", [
    (["run", "no-such-recipe"], "unknown recipe 'no-such-recipe': use one of"),
    (["run", "affine", "--preset", "gpu"], "unknown preset 'gpu': use one of cpu"),
    (["run", "affine", "--preset", "paper"], "needs local checkpoints"),
    (["run", "affine", "--path", "llm"], "bad --path 'llm': write NAME=PATH"),
    (["run", "affine", "--only", "Nothing*", "--dry-run"], "matches no run"),
    (["report", "affine", "--root", "/nonexistent/uvlm"], "no results of 'affine'"),
    (["run", "affine", "--inception", "/nonexistent/inception.pt"], "Inception weights file '/nonexistent/inception.pt' not found"),
    (["run", "affine", "--inception", "/"], "is a directory, not a file"),
    (["run", "affine", "--seeds", "0"], "--seeds must be at least 1"),
    (["eval", "/nonexistent", "--inception", "x.pt"], "--inception needs --generation N"),
    (["eval", "/nonexistent", "--generation", "10", "--conditioning", "5"], "give one of them per call"),
    (["eval", "/nonexistent", "--generation", "10", "--inception", "/nonexistent/x.pt"], "not found"),
    (["eval", "/nonexistent", "--generation", "10", "--trust-inception-file"], "needs --inception FILE"),
    (["run", "affine", "--trust-inception-file", "--dry-run"], "needs --inception FILE"),
])
def test_bad_recipe_commands_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ----- the runner on the fake vision source -------------------------------------------------------------------------
def _tiny_preset() -> Preset:
    test = SplitConfig.test(resolution=48, n_vqa=16, n_generation=8).to_dict()
    run = {"data": {"test": test, "feature_chunk": 64}, "model": {"llm": {"preset": "debug"}},
           "optim": {"batch_size": 8, "lr_llm": 3e-3, "lr_vision": 3e-3, "warmup_ratio": 0.0},
           "eval": {"questions": 12, "batch_size": 16, "max_new_tokens": 8}, "log": {"tensorboard": False}}
    return Preset(name="cpu", description="test", data_scale=0.0004, run=run, evals=2, generation_eval=0,
                  probe=(32, 16))


def _recipe():
    r = load_recipe("transfer-weather")
    return dataclasses.replace(r, variants=("SigLIP_u", "SigLIP-SigLIP"),
                               evaluate={"generation": False, "conditioning": True})


def test_sweep_runs_tabulates_skips_finished_and_survives_a_failure(tmp_path, fake_vision, monkeypatch):
    import uvlm.train.loop as loop

    recipe, preset = _recipe(), _tiny_preset()
    opts = SweepOptions(seeds=2, root=str(tmp_path), workers=1)
    real_train = loop.train

    def flaky(config, out, **kw):  # one run fails, the others must still finish
        if config.variant == "SigLIP-SigLIP" and config.seed == 1:
            raise RuntimeError("simulated failure")
        return real_train(config, out, **kw)

    monkeypatch.setattr(loop, "train", flaky)
    lines: list[str] = []
    result = run_sweep(recipe, preset, opts, log=lines.append)
    status = {(r["group"], r["seed"]): r["status"] for r in result["records"]}
    assert status == {("SigLIP_u", 0): "done", ("SigLIP_u", 1): "done", ("SigLIP-SigLIP", 0): "done",
                      ("SigLIP-SigLIP", 1): "failed"}
    failed = [r for r in result["records"] if r["status"] == "failed"][0]
    assert "simulated failure" in failed["error"]
    assert (tmp_path / "runs" / failed["dir"] / "failed.json").is_file()
    done = [r for r in result["records"] if r["status"] == "done"]
    assert all(0 <= r["final"]["vqa"]["total"] <= 100 and len(r["curve"]) == 2 for r in done)
    folder = tmp_path / recipe.name
    assert (folder / "results.csv").is_file() and (folder / "results.md").is_file()
    assert json.loads((folder / "sweep.json").read_text())["version"] == recipe.version

    # the second call trains only the failed run; finished runs are not touched
    monkeypatch.setattr(loop, "train", real_train)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/result.json")}
    again = run_sweep(recipe, preset, opts, log=lines.append)
    assert all(r["status"] == "done" for r in again["records"])
    # the text-conditioning gap of the runs that generate (8 test generations here), none for understanding-only
    assert all(("conditioning" in r["final"]) == (r["group"] == "SigLIP-SigLIP") for r in again["records"])
    assert all(math.isfinite(r["final"]["conditioning"]["gap"]) for r in again["records"] if r["group"] != "SigLIP_u")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(list((tmp_path / "runs").glob("*/result.json"))) == 4
    assert not list((tmp_path / "runs").glob("*/failed.json"))

    # a folder of another recipe version is refused
    newer = dataclasses.replace(recipe, version=recipe.version + 1)
    with pytest.raises(UserError, match="version 1 .* not 'transfer-weather' version 2"):
        run_sweep(newer, preset, opts, log=lines.append)


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path, fake_vision, monkeypatch):
    import uvlm.train.loop as loop

    recipe = dataclasses.replace(_recipe(), variants=("SigLIP-SigLIP",))
    preset = _tiny_preset()  # 9 steps, evaluations and checkpoints every 5
    straight = run_sweep(recipe, preset, SweepOptions(seeds=1, root=str(tmp_path / "a"), workers=1),
                         log=lambda s: None)["records"][0]

    real_train = loop.train

    def killed(config, out, **kw):  # dies after step 7, like a killed process (the step-5 checkpoint stays)
        def stop(step, record):
            if step == 7:
                raise KeyboardInterrupt
        return real_train(config, out, callback=stop, **kw)

    monkeypatch.setattr(loop, "train", killed)
    opts = SweepOptions(seeds=1, root=str(tmp_path / "b"), workers=1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(recipe, preset, opts, log=lambda s: None)
    monkeypatch.setattr(loop, "train", real_train)
    resumed = run_sweep(recipe, preset, opts, log=lambda s: None)["records"][0]
    assert resumed["status"] == "done"
    assert resumed["final"]["vqa"] == straight["final"]["vqa"]
    assert [p["vqa"] for p in resumed["curve"]] == [p["vqa"] for p in straight["curve"]]
    # both attempts count in the run's training time, not only the resumed one
    run_dir = next((tmp_path / "b" / "runs").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert len((run_dir / "attempts.jsonl").read_text().splitlines()) == 2
    assert result["train_seconds"] > result["attempt_seconds"] > 0


def test_attempts_seconds_counts_each_attempt_to_its_last_log_line(tmp_path):
    from uvlm.experiments.sweep import attempts_seconds

    (tmp_path / "attempts.jsonl").write_text('{"start": 100.0}\n{"start": 200.0}\n')
    lines = [{"kind": "train", "time": t} for t in (110.0, 130.0, 210.0)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + '\n{"kind": "tr')  # cut by a kill
    assert attempts_seconds(tmp_path, now=250.0) == pytest.approx(30.0 + 50.0)
    assert attempts_seconds(tmp_path / "nothing", now=250.0) == 0.0


def test_partial_sweeps_list_missing_runs_and_tables_only_trains_nothing(tmp_path, fake_vision):
    recipe, preset = _recipe(), _tiny_preset()
    opts = SweepOptions(seeds=1, root=str(tmp_path), workers=1, only=("SigLIP_u",))
    records = run_sweep(recipe, preset, opts, log=lambda s: None)["records"]
    assert {(r["group"], r["status"]) for r in records} == {("SigLIP_u", "done"), ("SigLIP-SigLIP", "missing")}
    csv = (tmp_path / recipe.name / "results.csv").read_text()
    assert "SigLIP_u" in csv and "SigLIP-SigLIP" not in csv
    trained = sorted(p.name for p in (tmp_path / "runs").iterdir())
    again = run_sweep(recipe, preset, dataclasses.replace(opts, only=(), tables_only=True), log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == trained  # nothing new was trained
    assert [r["status"] for r in again["records"]] == [r["status"] for r in records]


def test_a_wrong_inception_file_is_refused_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "inception.pt"
    bad.write_text("not a network")
    assert main(["run", "affine", "--inception", str(bad), "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a known Inception-v3 file" in err and len(err.splitlines()) == 1  # unknown digest: not loaded
    assert main(["run", "affine", "--inception", str(bad), "--trust-inception-file", "--root",
                 str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a TorchScript module" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "root").exists()  # nothing was written


def test_the_runtime_estimate_counts_training_evaluations_and_workers():
    from uvlm.experiments.recipe import EVAL_SECONDS_PER_QUESTION, RUN_START_SECONDS, estimate_minutes

    preset = load_preset("cpu")
    runs = [r for r in expand(load_recipe("transfer-weather"), preset, 1) if r.labels["variant"] == "SigLIP_u"]
    (run,) = runs
    c = run.config
    n = (c.data.train.n_vqa + c.data.train.n_caption) * c.optim.epochs
    evals = math.ceil(max(1, int(n) // c.optim.batch_size) / c.eval.every)
    evaluating = ((evals - 1) * c.eval.questions + c.eval.final_questions) * EVAL_SECONDS_PER_QUESTION["siglip"]
    want = RUN_START_SECONDS + n / preset.samples_per_s["siglip"] + evaluating
    assert estimate_minutes(runs, preset, 1) == pytest.approx(want / 60)
    assert estimate_minutes(runs * 4, preset, 2) == pytest.approx(2 * want / 60)  # 4 equal runs on 2 workers
    vq = [r for r in expand(load_recipe("transfer-weather"), preset, 1) if r.labels["variant"] == "VQ_u"]
    assert estimate_minutes(vq, preset, 1) > 3 * estimate_minutes(runs, preset, 1)


def test_a_sweep_continues_on_a_fresh_machine_from_committed_results(tmp_path, fake_vision, monkeypatch):
    """Finished runs' results (JSON, predictions; no weights) go to the committed folder; a fresh root with that folder
    trains nothing for them, regenerates the same tables, and trains only what is missing."""
    import gzip

    import uvlm.train.loop as loop

    recipe, preset = _recipe(), _tiny_preset()
    committed = tmp_path / "results"
    first = run_sweep(recipe, preset, SweepOptions(seeds=1, root=str(tmp_path / "machine-a"), workers=1,
                                                   only=("SigLIP_u",), results=str(committed)), log=lambda s: None)
    done = [r for r in first["records"] if r["status"] == "done"]
    assert len(done) == 1
    kept = committed / "runs" / done[0]["dir"]
    assert (kept / "result.json").is_file() and (kept / "config.json").is_file()
    assert not list(kept.rglob("*.safetensors")) and not (kept / "checkpoints").exists()
    # provenance: the vision artifacts' weight digests and the machine that trained it
    vision = json.loads((kept / "vision.json").read_text())
    assert vision == json.loads((tmp_path / "machine-a" / "runs" / done[0]["dir"] / "vision.json").read_text())
    assert vision["understanding"] is not None
    machine = json.loads((kept / "result.json").read_text())["machine"]
    assert machine["threads"] == 1 and machine["torch"] == torch.__version__ and isinstance(machine["isa"], list)
    with gzip.open(kept / "predictions-final.jsonl.gz", "rt") as fh:
        assert len(fh.read().splitlines()) == preset.run["eval"]["questions"]
    assert (committed / recipe.name / "results.md").is_file()

    real_train = loop.train
    trained: list[str] = []

    def counting(config, out, **kw):
        trained.append(config.variant)
        return real_train(config, out, **kw)

    monkeypatch.setattr(loop, "train", counting)
    second = run_sweep(recipe, preset, SweepOptions(seeds=1, root=str(tmp_path / "machine-b"), workers=1,
                                                    results=str(committed)), log=lambda s: None)
    assert trained == ["SigLIP-SigLIP"]  # the committed SigLIP_u run was not trained again
    by_group = {r["group"]: r for r in second["records"]}
    assert all(r["status"] == "done" for r in second["records"])
    assert by_group["SigLIP_u"]["final"]["vqa"] == done[0]["final"]["vqa"]
    assert by_group["SigLIP_u"]["curve"] == done[0]["curve"]
    assert len(list((committed / "runs").iterdir())) == 2  # the new run was committed too
    # tables only, on a third fresh machine: everything from the committed folder, nothing trained
    trained.clear()
    third = run_sweep(recipe, preset, SweepOptions(seeds=1, root=str(tmp_path / "machine-c"), workers=1,
                                                   results=str(committed), tables_only=True), log=lambda s: None)
    assert trained == [] and [r["final"] for r in third["records"]] == [r["final"] for r in second["records"]]


def test_unihetero_semantic_vs_pixel_expands_at_every_preset():
    recipe = load_recipe("unihetero-semantic-vs-pixel")
    for preset_name in preset_names():
        runs = expand(recipe, load_preset(preset_name), seeds=3, paths=PAPER_PATHS)
        assert len(runs) == 18  # four arms and the transfer study's two SigLIP-SigLIP references, 3 seeds
        by_target = {r.config.model.target: r for r in runs if r.seed == 0 and r.config.model.alpha != 0}
        assert set(by_target) == {None, "siglip", "llm-embeds", "diffusion", "llm-embeds+diffusion"}
        # every generating arm at the gradient-norm balance; the steps control at alpha = 0
        rules = sorted((r.config.balance.rule, str(r.config.model.alpha)) for r in runs if r.seed == 0)
        assert rules == [("fixed", "0.0"), ("fixed", "None")] + [("grad-norm", "None")] * 4
        assert {r.config.mode for r in by_target.values()} == {"understanding", "mixed"}
        for pixel in ("diffusion", "llm-embeds+diffusion"):
            sources = by_target[pixel].config.vision.sources
            assert sources == ({"kl-vae": "/models/kl16.ckpt"} if preset_name == "paper" else {})
            assert by_target[pixel].evaluate["generation"] > 0
        # the arms see the same understanding data; only the arm that draws pixels is scored on its drawings
        splits = {(r.config.data.train.n_vqa, r.config.data.train.n_caption) for r in runs}
        assert len(splits) == 1
        assert by_target["diffusion"].evaluate["generation"] > 0 and by_target["llm-embeds"].evaluate["generation"] == 0
        assert by_target["llm-embeds"].evaluate["conditioning"] and by_target["diffusion"].evaluate["conditioning"]
    with pytest.raises(UserError, match="--path kl16=PATH"):
        expand(recipe, load_preset("paper"), 1, {k: v for k, v in PAPER_PATHS.items() if k != "kl16"})


def test_the_progress_line_shows_only_runs_that_log_now(tmp_path):
    import os
    from types import SimpleNamespace

    from uvlm.experiments.sweep import _progress

    runs = [SimpleNamespace(folder=f"r{k}", group="SigLIP_u", seed=k, id=f"r{k}") for k in range(3)]
    for k in range(3):
        (tmp_path / f"r{k}").mkdir()
        (tmp_path / f"r{k}" / "metrics.jsonl").write_text(json.dumps({"step": 50}) + "\n")
    (tmp_path / "r2" / "result.json").write_text("{}")
    os.utime(tmp_path / "r0" / "metrics.jsonl", (1000.0, 1000.0))  # interrupted by an earlier sweep
    line = _progress(runs, tmp_path, {f"r{k}": 100 for k in range(3)}, since=2000.0)
    assert line == "1/3 trained, 1 interrupted earlier (to resume) | SigLIP_u/s1  50%"
