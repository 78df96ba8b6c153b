"""2x2 token pooling of continuous sources (``vision.pool``): exact averages, shared feature cache, training."""

from __future__ import annotations

import pytest
import torch

from _fakes import FakeSource, tiny_config
from uvlm.errors import UserError
from uvlm.train.config import VisionConfig
from uvlm.train.data import feature_cache, load_sources
from uvlm.vision.sources import PooledSource


def test_pooling_averages_grid_cells_and_unpool_repeats_them():
    base = FakeSource("siglip")  # 48 px, 12 px patches: a 4x4 grid
    pooled = PooledSource(base, 2)
    assert (pooled.num_tokens, pooled.input_dim, pooled.resolution) == (4, base.input_dim, base.resolution)
    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)
    y = pooled.to_inputs(x)
    grid = x.reshape(2, 4, 4, 3)
    assert torch.allclose(y[:, 0], grid[:, :2, :2].mean(dim=(1, 2)))  # top-left 2x2 block
    assert torch.allclose(y[:, 3], grid[:, 2:, 2:].mean(dim=(1, 2)))  # bottom-right block
    assert torch.equal(pooled.to_targets(x), y)
    up = pooled.unpool(y).reshape(2, 4, 4, 3)
    assert torch.equal(up[:, 0, 1], y[:, 0]) and torch.equal(up[:, 3, 2], y[:, 3])
    # the cache is keyed by the unpooled source (one cache serves every pool size); the run identity names the pool
    assert pooled.cache_identity() == base.identity() and pooled.identity()["pool"] == 2
    with pytest.raises(UserError, match="grid side must be a multiple of 3"):
        PooledSource(base, 3)


def test_runs_pool_siglip_but_never_vq_and_train(tmp_path, fake_vision):
    from uvlm.train.loop import train

    cfg = tiny_config("SigLIP-VQ")
    cfg = cfg.with_(vision=VisionConfig(understanding="siglip", generation="vq", pool=2))
    sources = load_sources(cfg)
    assert sources.understanding.num_tokens == 4 and sources.generation.num_tokens == 16
    cache = feature_cache(sources.understanding, cfg.data.train, cfg.data.feature_chunk)
    plain = feature_cache(FakeSource("siglip"), cfg.data.train, cfg.data.feature_chunk)
    assert cache.dir == plain.dir
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.steps == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    with pytest.raises(UserError, match="vision.pool must be a positive integer"):
        VisionConfig(pool=0)
