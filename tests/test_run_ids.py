"""Run identities are stable: committed run configs round-trip unchanged, and the recipes still expand to the run
folders the committed results were trained in (a run folder is named by a hash of its config)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uvlm.experiments.recipe import expand, load_preset, load_recipe
from uvlm.train.config import RunConfig

RESULTS = Path(__file__).resolve().parent.parent / "results" / "cpu" / "runs"
CONFIGS = sorted(RESULTS.glob("*/config.json"))

#: The folders of ``uvlm run transfer-study --seeds 3`` at the cpu preset.
TRANSFER_STUDY_3 = [
    "SigLIP_u-seed0-e7e67abd", "SigLIP_u-seed1-35818f31", "SigLIP_u-seed2-d83db3c1",
    "SigLIP-SigLIP-seed0-145df217", "SigLIP-SigLIP-seed1-34983fed", "SigLIP-SigLIP-seed2-5b63013d",
    "SigLIP-SigLIP-seed0-ea600c64", "SigLIP-SigLIP-seed1-638a9358", "SigLIP-SigLIP-seed2-67faf836",
    "SigLIP-SigLIP-seed0-70a91c4f", "SigLIP-SigLIP-seed1-5869e3d1", "SigLIP-SigLIP-seed2-b38c6877",
    "SigLIP_u-seed0-8397b7f5", "SigLIP_u-seed1-8ce2f1e2", "SigLIP_u-seed2-f2452dd7",
]

#: Folders under results/cpu/runs trained by each recipe (at its committed seed count).
TRAINED = {
    ("transfer-study", 6): ["SigLIP_u-seed0-8397b7f5", "SigLIP_u-seed0-e7e67abd", "SigLIP_u-seed1-35818f31",
                            "SigLIP_u-seed1-8ce2f1e2", "SigLIP_u-seed2-d83db3c1", "SigLIP_u-seed2-f2452dd7"],
    ("calibration", 3): [
        "SigLIP_g-seed0-16d3481d", "SigLIP_g-seed0-3ac9dff8", "SigLIP_g-seed0-4230ffbe", "SigLIP_g-seed0-52e69db8",
        "SigLIP_g-seed0-5b2f59ab", "SigLIP_g-seed0-d1c656c2", "SigLIP_g-seed0-e442ea42", "SigLIP_g-seed1-5e65bd41",
        "SigLIP_g-seed1-deb0dd85", "SigLIP_g-seed2-4395720a", "SigLIP_u-seed0-238a59a9", "SigLIP_u-seed0-8397b7f5",
        "SigLIP_u-seed0-88d5509f", "SigLIP_u-seed0-cb7579b7", "SigLIP_u-seed0-d87842fa", "SigLIP_u-seed0-e10e76b2",
        "SigLIP_u-seed0-e7e67abd", "SigLIP_u-seed1-35818f31", "SigLIP_u-seed1-8ce2f1e2", "SigLIP_u-seed2-d83db3c1",
        "SigLIP_u-seed2-f2452dd7"],
}


@pytest.mark.skipif(not CONFIGS, reason="no committed run configs in this checkout")
@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_committed_run_configs_round_trip_unchanged(path):
    d = json.loads(path.read_text())
    assert RunConfig.from_dict(d).to_dict() == d


def _folders(recipe: str, seeds: int) -> list[str]:
    return [r.folder for r in expand(load_recipe(recipe), load_preset("cpu"), seeds, strict_paths=False)]


def test_transfer_study_expands_to_the_same_run_folders():
    assert _folders("transfer-study", 3) == TRANSFER_STUDY_3


@pytest.mark.parametrize("recipe,seeds", list(TRAINED))
def test_recipes_expand_to_the_committed_run_folders(recipe, seeds):
    planned = set(_folders(recipe, seeds))
    assert set(TRAINED[recipe, seeds]) <= planned
    if RESULTS.is_dir():  # every existing folder of the recipe's runs is one it plans
        existing = {p.name for p in RESULTS.iterdir() if p.is_dir()}
        assert set(TRAINED[recipe, seeds]) & existing <= planned & existing
