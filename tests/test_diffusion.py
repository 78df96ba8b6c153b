"""The per-token diffusion head: config validation, initialisation, the sampler's arithmetic, learning, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uvlm.errors import UserError
from uvlm.model.diffusion import DenoiserMLP, DiffusionHead, DiffusionHeadConfig, NoiseSchedule, spaced_steps

MODES = torch.tensor([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5]])
WEIGHT_1 = 0.7  # condition 0: mode 0 with weight 0.3, mode 1 with weight 0.7; condition 1: mode 2 only
SPREAD = 0.2


def mixture(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (token, condition) pairs of the 2-D toy problem: the condition is a one-hot of two classes."""
    cls = torch.randint(0, 2, (n,), generator=g)
    pick = (torch.rand(n, generator=g) < WEIGHT_1).long()
    centre = torch.where(cls[:, None] == 0, MODES[pick], MODES[2])
    return centre + SPREAD * torch.randn(n, 2, generator=g), F.one_hot(cls, 2).float()


def train(head: DiffusionHead, steps: int, seed: int = 1, lr: float = 3e-3, batch: int = 256) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        x, c = mixture(batch, g)
        loss = head.loss(x, c, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def toy_head(**kw) -> DiffusionHead:
    torch.manual_seed(0)
    return DiffusionHead(DiffusionHeadConfig.tiny(**{"token_dim": 2, "cond_dim": 2, "width": 64, "depth": 2, **kw}))


@pytest.fixture(scope="module")
def trained() -> DiffusionHead:
    """The toy head after 400 steps (about 7 s on one core)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        head = toy_head()
        train(head, 400)
    finally:
        torch.set_num_threads(n)
    return head.eval()


# ----- config and inputs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, words", [
    (dict(width=0), "width must be a positive integer"),
    (dict(depth=-1), "depth must be a positive integer"),
    (dict(train_steps=0), "train_steps must be a positive integer"),
    (dict(sample_steps=0), "sample_steps must be a positive integer"),
    (dict(sample_steps=2000), "exceeds train_steps"),
    (dict(batch_mul=0), "batch_mul must be a positive integer"),
    (dict(token_dim=2.5), "token_dim must be a positive integer"),
    (dict(schedule="sqrt"), "unknown diffusion noise schedule 'sqrt'"),
    (dict(clip_x0=-1.0), "clip_x0 must be a number >= 0"),
    (dict(frequency_dim=255), "frequency_dim must be even"),
])
def test_bad_configs_are_one_line_user_errors(bad: dict, words: str) -> None:
    with pytest.raises(UserError) as e:
        DiffusionHeadConfig(**bad)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_config_round_trip_and_unknown_keys() -> None:
    c = DiffusionHeadConfig.tiny(batch_mul=2)
    assert DiffusionHeadConfig.from_dict(c.to_dict()) == c
    with pytest.raises(UserError, match="unknown diffusion head config key"):
        DiffusionHeadConfig.from_dict({**c.to_dict(), "diffusion_batch_mul": 4})


def test_bad_calls_are_user_errors() -> None:
    head = toy_head()
    cond = torch.zeros(3, 2)
    for kw, words in [(dict(steps=0), "steps must be a positive integer"),
                      (dict(steps=1001), "exceed the 1000 training steps"),
                      (dict(temperature=-0.1), "temperature must be a number >= 0"),
                      (dict(cfg=2.0), "needs the unconditional condition"),
                      (dict(cfg=2.0, uncond=torch.zeros(2, 2)), "uncond has 2 rows for 3 conditions")]:
        with pytest.raises(UserError, match=words):
            head.sample(cond, **kw)
    with pytest.raises(UserError, match=r"condition must be a \(N, 2\) tensor, got \(3, 5\)"):
        head.sample(torch.zeros(3, 5))
    with pytest.raises(UserError, match="3 target tokens but 4 conditions"):
        head.loss(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(UserError, match=r"target must be a \(N, 2\) tensor"):
        head.loss(torch.zeros(3, 7), cond)
    with pytest.raises(UserError, match=r"mask must have shape \(3,\)"):
        head.loss(torch.zeros(3, 2), cond, mask=torch.ones(6))


# ----- architecture and schedule ------------------------------------------------------------------------------------

def test_zero_initialised_modulation_and_output() -> None:
    head = toy_head()
    net = head.net
    for m in [b.adaLN_modulation[-1] for b in net.res_blocks] + [net.final_layer.adaLN_modulation[-1],
                                                                  net.final_layer.linear]:
        assert not m.weight.any() and not m.bias.any()
    assert net.final_layer.linear.out_features == 4  # learned sigma: 2 x token_dim
    x = torch.randn(5, 2)
    out = net(x, torch.tensor([0, 10, 500, 900, 999]), torch.randn(5, 2))
    assert torch.equal(out, torch.zeros(5, 4))  # an untrained head predicts no noise
    h = net.input_proj(x)
    y = net.time_embed(torch.zeros(5, dtype=torch.long)) + net.cond_embed(torch.randn(5, 2))
    for block in net.res_blocks:
        assert torch.equal(block(h, y), h)  # every residual block starts as the identity
    assert DenoiserMLP(DiffusionHeadConfig.tiny(token_dim=2, cond_dim=2, learn_sigma=False)).final_layer.linear \
        .out_features == 2


def test_respacing_matches_the_published_striding() -> None:
    assert spaced_steps(1000, 1000) == list(range(1000))
    s100 = spaced_steps(1000, 100)
    assert len(s100) == 100 and s100[0] == 0 and s100[-1] == 999
    assert s100[:8] == [0, 10, 20, 30, 40, 50, 61, 71]  # round(i * 999 / 99), Python rounding as in MAR
    assert spaced_steps(1000, 1) == [0]
    base = NoiseSchedule("cosine", 1000)
    sub = NoiseSchedule("cosine", 1000, s100)
    torch.testing.assert_close(sub.alphas_cumprod, base.alphas_cumprod[s100], rtol=0, atol=0)
    # the respaced betas compose to the same cumulative products
    torch.testing.assert_close(torch.cumprod(1 - sub.betas, 0), sub.alphas_cumprod)
    # cosine: alpha_bar falls from 1 to ~0 and its last beta is clipped at 0.999
    assert float(base.alphas_cumprod[0]) > 0.9999 and float(base.alphas_cumprod[-1]) < 1e-8
    assert abs(float(base.betas[-1]) - 0.999) < 1e-12
    lin = NoiseSchedule("linear", 1000)
    assert abs(float(lin.betas[0]) - 1e-4) < 1e-12 and abs(float(lin.betas[-1]) - 0.02) < 1e-12


class GaussianOracle(DenoiserMLP):
    """The exact noise predictor for data ``N(mu, sigma^2)`` per dimension (no learning involved)."""

    def __init__(self, head: DiffusionHead, mu: float, sigma: float):
        super().__init__(head.config)
        self.abar = head.train_schedule.alphas_cumprod.float()
        self.mu, self.sigma = mu, sigma

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        ab = self.abar[t][:, None]
        x0 = self.mu + ab.sqrt() * self.sigma ** 2 / (ab * self.sigma ** 2 + 1 - ab) * (x - ab.sqrt() * self.mu)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()


@pytest.mark.parametrize("steps, tol", [(1000, 0.02), (100, 0.04), (20, 0.1)])
def test_sampler_draws_the_oracle_distribution(steps: int, tol: float) -> None:
    """With the exact noise predictor of N(3, 0.5^2), respaced sampling returns that distribution: the mean within
    0.05, the spread within ``tol`` (with the fixed posterior variance, fewer steps sample narrower: 0.42 at 20 steps,
    which is why MAR learns the variance)."""
    head = toy_head(learn_sigma=False, clip_x0=0.0)
    head.net = GaussianOracle(head, 3.0, 0.5)
    x = head.sample(torch.zeros(4000, 2), steps=steps, generator=torch.Generator().manual_seed(0))
    assert (x.mean(0) - 3.0).abs().max() < 0.05
    assert (x.std(0) - 0.5).abs().max() < tol
    cold = head.sample(torch.zeros(4000, 2), steps=steps, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert float(cold.std(0).max()) < float(x.std(0).min())  # temperature below 1 narrows the samples


# ----- learning ---------------------------------------------------------------------------------------------------

def test_loss_falls_on_a_toy_problem(one_thread) -> None:
    head = toy_head()
    g = torch.Generator().manual_seed(7)
    x, c = mixture(2048, g)

    def held_out() -> float:
        with torch.no_grad():
            return float(head.loss(x, c, generator=torch.Generator().manual_seed(8)))

    before = held_out()
    losses = train(head, 60)
    after = held_out()
    assert after < 0.5 * before, (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_sampler_recovers_a_mixture_of_gaussians(trained: DiffusionHead) -> None:
    """After 400 training steps the samples per condition match the known mixture: mode weight within 0.05, mode
    means within 0.1, spread within 0.05, and fewer than 2% of samples off every mode."""
    g = torch.Generator().manual_seed(5)
    s = trained.sample(torch.tensor([[1.0, 0.0]]).expand(2000, 2), steps=100, generator=g)
    d = torch.cdist(s, MODES[:2])
    near = d.argmin(1)
    assert float((d.min(1).values > 4 * SPREAD).float().mean()) < 0.02
    assert abs(float((near == 1).float().mean()) - WEIGHT_1) < 0.05
    for k in (0, 1):
        assert (s[near == k].mean(0) - MODES[k]).abs().max() < 0.1
        assert (s[near == k].std(0) - SPREAD).abs().max() < 0.05
    other = trained.sample(torch.tensor([[0.0, 1.0]]).expand(1000, 2), steps=50, generator=g)
    assert (other.mean(0) - MODES[2]).abs().max() < 0.1
    assert (other.std(0) - SPREAD).abs().max() < 0.05


def test_guidance_with_scale_zero_is_the_unconditional_model(trained: DiffusionHead) -> None:
    """cfg = 0 uses only the unconditional branch's noise; with learned variance it keeps the conditional variance,
    so the comparison runs on a fixed-variance copy of the trained head."""
    fixed = toy_head(learn_sigma=False)
    with torch.no_grad():
        state = trained.net.state_dict()
        state["final_layer.linear.weight"] = state["final_layer.linear.weight"][:2]
        state["final_layer.linear.bias"] = state["final_layer.linear.bias"][:2]
        fixed.net.load_state_dict(state)
    cond, uncond = torch.tensor([[1.0, 0.0]]).expand(64, 2), torch.tensor([[0.0, 1.0]])
    a = fixed.sample(cond, steps=20, cfg=0.0, uncond=uncond, generator=torch.Generator().manual_seed(3))
    b = fixed.sample(uncond.expand(64, 2), steps=20, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    plain = fixed.sample(cond, steps=20, generator=torch.Generator().manual_seed(3))
    one = fixed.sample(cond, steps=20, cfg=1.0, uncond=uncond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, one)
    # a scale above 1 pushes condition 0's samples further from condition 1's mode than unguided sampling does
    far = trained.sample(cond, steps=20, cfg=3.0, uncond=uncond, generator=torch.Generator().manual_seed(3))
    near = trained.sample(cond, steps=20, generator=torch.Generator().manual_seed(3))
    assert float((far - MODES[2]).norm(dim=1).mean()) > float((near - MODES[2]).norm(dim=1).mean())


def test_gradient_reaches_the_condition_and_respects_the_mask(trained: DiffusionHead) -> None:
    torch.manual_seed(0)
    llm = torch.nn.Linear(4, 2)  # stands in for the model whose hidden states condition the head
    g = torch.Generator().manual_seed(11)
    x, _ = mixture(8, g)
    h = torch.randn(8, 4, requires_grad=True)
    mask = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0.0])
    trained.loss(x, llm(h), mask=mask, generator=g).backward()
    assert llm.weight.grad is not None and bool(llm.weight.grad.abs().sum() > 0)
    assert bool(torch.isfinite(h.grad).all())
    assert bool((h.grad[mask == 1].abs().sum(1) > 0).all())
    assert not h.grad[mask == 0].any()  # masked tokens send no gradient


def test_each_token_is_noised_batch_mul_times(monkeypatch) -> None:
    head = toy_head(batch_mul=3)
    seen = []
    forward = head.net.forward

    def recording(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        seen.append((x.shape[0], t.clone()))
        return forward(x, t, c)

    monkeypatch.setattr(head.net, "forward", recording)
    head.loss(torch.zeros(5, 2), torch.zeros(5, 2), generator=torch.Generator().manual_seed(0))
    (n, t), = seen
    assert n == 15 and len(set(t.tolist())) > 5  # 3 independent steps per token


# ----- determinism ----------------------------------------------------------------------------------------------------

def test_same_seed_same_samples_and_losses(trained: DiffusionHead) -> None:
    cond = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(16, 1)

    def draw(seed: int, **kw) -> torch.Tensor:
        return trained.sample(cond, steps=25, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(draw(4), draw(4))
    assert torch.equal(draw(4, cfg=2.0, uncond=cond[:1]), draw(4, cfg=2.0, uncond=cond[:1]))
    assert not torch.equal(draw(4), draw(5))
    x, c = mixture(32, torch.Generator().manual_seed(0))
    with torch.no_grad():
        la = trained.loss(x, c, generator=torch.Generator().manual_seed(9))
        lb = trained.loss(x, c, generator=torch.Generator().manual_seed(9))
    assert torch.equal(la, lb)
    # training twice from the same seeds gives the same weights, bit for bit
    a, b = toy_head(), toy_head()
    train(a, 3)
    train(b, 3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_token_losses_are_the_per_token_means_of_the_loss(trained: DiffusionHead) -> None:
    g = torch.Generator().manual_seed(5)
    target, cond = torch.randn(6, trained.token_dim, generator=g), torch.randn(6, trained.cond_dim, generator=g)
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    per = trained.token_losses(target, cond, generator=torch.Generator().manual_seed(9))
    assert per.shape == (6,)
    assert torch.allclose(trained.loss(target, cond, generator=torch.Generator().manual_seed(9)), per.mean())
    masked = trained.loss(target, cond, mask, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(masked, per[mask].mean())
