"""Shared test setup: offline, single-threaded, a private cache folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Trained artifacts go to a per-session temporary cache, never the user's."""
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path_factory.getbasetemp() / "uvlm-cache"))


@pytest.fixture
def fake_vision(monkeypatch):
    """Train on the small deterministic fake vision source (tests/_fakes.py); restore torch's thread count after."""
    import torch

    from _fakes import install

    install(monkeypatch)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (as training does), restoring the count after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
