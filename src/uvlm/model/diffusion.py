"""A per-token diffusion head (MAR's Diffusion Loss): a small MLP denoiser conditioned on one vector per token.

A unified model that generates continuous latent tokens (a KL-VAE latent grid, :mod:`uvlm.vision.kl_vae`) cannot
predict them with a regression head: a token has a distribution, not a value. The head models ``p(x | z)`` for each
token ``x`` (dimension ``D``) given the condition ``z`` (dimension ``H``, the LLM's hidden state at that image
position) with a denoising diffusion model, as MAR does (Li et al., "Autoregressive Image Generation without Vector
Quantization", 2024). Its loss gradient reaches ``z``, so it trains the LLM: that is the pixel-level objective.

The design follows MAR's ``DiffLoss`` / ``SimpleMLPAdaLN``:

- the noisy token is projected to ``width``; the condition is projected to ``width`` and added to a timestep
  embedding (sinusoidal features of the step index through a two-layer MLP); their sum ``y`` drives
- ``depth`` residual blocks ``x + gate(y) * MLP(modulate(LayerNorm(x), shift(y), scale(y)))`` (adaLN), and
- a final adaLN layer (LayerNorm without affine, shift/scale from ``y``, a linear output);
- the adaLN modulations and the output linear start at zero, so an untrained head predicts zero noise and every
  residual block starts as the identity;
- epsilon prediction on a 1,000-step noise schedule (cosine by default, "linear" also available); with
  ``learn_sigma`` (MAR's default) the head outputs ``2 D`` values, the second half interpolating the log variance
  between the posterior variance and ``beta_t``, trained by the variational bound with the mean detached (IDDPM's
  hybrid loss ``mse + vb``);
- each token's loss is drawn at ``batch_mul`` independent (step, noise) pairs per call (MAR's
  ``diffusion_batch_mul``, default 4), which costs the head 4x but not the LLM;
- sampling uses ``steps`` evenly spaced steps of the 1,000 (respaced DDPM, MAR's default 100), with the noise of every
  step but the first multiplied by ``temperature`` (as MAR's ``p_sample`` does), and classifier-free guidance.

One difference from MAR, stated: at step 0 the variational bound's decoder term is the likelihood of the token under
the predicted Gaussian, integrated over a bin of width ``2 / 255`` as in MAR (which assumes 8-bit data in
``[-1, 1]``); here the exact normal CDF replaces MAR's tanh approximation of it.

Shapes: ``loss(target (N, D), cond (N, H), mask (N,) or None) -> ()``, ``token_losses(target, cond) -> (N,)`` and
``sample(cond (N, H)) -> (N, D)``.
Randomness: every draw (steps, noise) comes from the ``generator`` argument, so the same generator seed gives the
same loss and the same samples, bit for bit, on the same machine and torch build.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from uvlm.errors import UserError, check_keys, require

__all__ = ["DiffusionHeadConfig", "DiffusionHead", "DenoiserMLP", "NoiseSchedule", "spaced_steps"]

SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class DiffusionHeadConfig:
    """Architecture and diffusion process of a :class:`DiffusionHead` (defaults: MAR's head for its KL-16 tokens)."""

    token_dim: int = 16
    """``D``, the dimension of one generated token (KL-16: 16 channels per latent position)."""
    cond_dim: int = 1024
    """``H``, the dimension of the condition vector (the LLM's hidden size)."""
    width: int = 1024
    """Hidden width of the denoiser MLP (MAR: 1024)."""
    depth: int = 3
    """Residual adaLN blocks (MAR: 3)."""
    train_steps: int = 1000
    """Diffusion steps of the training process ``T`` (MAR: 1,000)."""
    sample_steps: int = 100
    """Respaced steps used by :meth:`DiffusionHead.sample` when it is not given ``steps`` (MAR: 100)."""
    batch_mul: int = 4
    """Noise draws per token per loss call (MAR's ``diffusion_batch_mul``: 4)."""
    schedule: str = "cosine"
    """Noise schedule: ``"cosine"`` (Nichol & Dhariwal; MAR) or ``"linear"`` (Ho et al., scaled to ``train_steps``)."""
    learn_sigma: bool = True
    """Also predict the per-step variance (``2 D`` outputs, hybrid loss); False: ``D`` outputs, the plain epsilon MSE,
    and sampling with the posterior variance."""
    frequency_dim: int = 256
    """Sinusoidal features of the timestep before its MLP (MAR: 256)."""
    clip_x0: float = 0.0
    """Sampling only: clamp each step's prediction of the clean token to ``[-clip_x0, clip_x0]`` (0: no clamp, as
    MAR). See :class:`DiffusionHead` for why a briefly trained head needs it under the cosine schedule."""

    def __post_init__(self) -> None:
        for name in ("token_dim", "cond_dim", "width", "depth", "train_steps", "sample_steps", "batch_mul",
                     "frequency_dim"):
            v = getattr(self, name)
            require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    f"diffusion head {name} must be a positive integer, got {v!r}")
        require(self.train_steps >= 2, f"diffusion head train_steps must be at least 2, got {self.train_steps}")
        require(self.sample_steps <= self.train_steps,
                f"diffusion head sample_steps {self.sample_steps} exceeds train_steps {self.train_steps}: "
                f"use at most {self.train_steps}")
        require(self.frequency_dim % 2 == 0, f"diffusion head frequency_dim must be even, got {self.frequency_dim}")
        require(self.schedule in SCHEDULES,
                f"unknown diffusion noise schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        require(isinstance(self.clip_x0, (int, float)) and not isinstance(self.clip_x0, bool) and
                math.isfinite(self.clip_x0) and self.clip_x0 >= 0,
                f"diffusion head clip_x0 must be a number >= 0 (0: off), got {self.clip_x0!r}")
        require(isinstance(self.learn_sigma, bool), f"diffusion head learn_sigma must be true or false, "
                                                    f"got {self.learn_sigma!r}")

    @classmethod
    def mar(cls, **kw: Any) -> "DiffusionHeadConfig":
        """MAR's head: 16-channel KL-16 tokens, width 1024, depth 3, cosine, 1,000 steps, 100 sampling steps, x4."""
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "DiffusionHeadConfig":
        """CPU preset: 8-dim tokens (the tiny KL-VAE), a 256-wide condition (the tiny LLM), width 256, depth 3
        (1.3 M parameters), and the clean-token clamp at 5 (latents scaled to unit variance rarely leave +-5; see
        :class:`DiffusionHead` for why a briefly trained head needs the clamp)."""
        base: dict[str, Any] = dict(token_dim=8, cond_dim=256, width=256, depth=3, clip_x0=5.0)
        return cls(**{**base, **kw})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiffusionHeadConfig":
        check_keys(cls, d, "diffusion head config")
        return cls(**d)


# ----- the noise schedule ---------------------------------------------------------------------------------------

def _betas(schedule: str, steps: int) -> torch.Tensor:
    if schedule == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)],
                        dtype=torch.float64)


def spaced_steps(train_steps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced indices of ``0..train_steps-1``, first and last included (MAR's ``space_timesteps``
    with one section: index ``round(i * (T - 1) / (steps - 1))``)."""
    require(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
            f"diffusion sampling steps must be a positive integer, got {steps!r}")
    require(steps <= train_steps, f"diffusion sampling steps {steps} exceed the {train_steps} training steps: "
                                  f"use at most {train_steps}")
    if steps == 1:
        return [0]
    stride = (train_steps - 1) / (steps - 1)
    return sorted({round(i * stride) for i in range(steps)})


class NoiseSchedule:
    """The quantities of a DDPM process over the kept steps ``timesteps`` of a base schedule (float64).

    Respacing keeps the cumulative products ``alpha_bar`` at the kept steps and recomputes each kept step's
    ``beta = 1 - alpha_bar_k / alpha_bar_{k-1}``, so a respaced process samples the same marginals in fewer steps.
    """

    def __init__(self, schedule: str, train_steps: int, timesteps: list[int] | None = None):
        base = torch.cumprod(1 - _betas(schedule, train_steps), 0)
        self.timesteps = torch.tensor(timesteps if timesteps is not None else list(range(train_steps)))
        abar = base[self.timesteps]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.betas = 1 - abar / prev
        self.alphas_cumprod = abar
        self.sqrt_abar = abar.sqrt()
        self.sqrt_1m_abar = (1 - abar).sqrt()
        self.sqrt_recip_abar = (1 / abar).sqrt()
        self.sqrt_recipm1_abar = (1 / abar - 1).sqrt()
        post_var = self.betas * (1 - prev) / (1 - abar)
        self.posterior_variance = post_var
        # the posterior variance is 0 at the first step: clip its log to the second step's
        self.posterior_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if len(abar) > 1 else \
            torch.log(self.betas)
        self.coef_x0 = self.betas * prev.sqrt() / (1 - abar)
        self.coef_xt = (1 - prev) * (1 - self.betas).sqrt() / (1 - abar)
        self.log_betas = torch.log(self.betas)

    def __len__(self) -> int:
        return len(self.timesteps)

    @staticmethod
    def at(v: torch.Tensor, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Entries ``i`` (N,) of the float64 table ``v`` as ``like``'s dtype, shaped (N, 1) to broadcast over D."""
        return v.to(like.device)[i].to(like.dtype)[:, None]


# ----- the denoiser -----------------------------------------------------------------------------------------------

def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of the (original, un-respaced) step index through Linear-SiLU-Linear."""

    def __init__(self, width: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """``x + gate * MLP(modulate(LN(x), shift, scale))`` with (shift, scale, gate) from the conditioning ``y``."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(_modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    """DiT's final layer: LayerNorm without affine, adaLN shift/scale from ``y``, then a linear output."""

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class DenoiserMLP(nn.Module):
    """MAR's ``SimpleMLPAdaLN``: ``(x_t (N, D), t (N,), cond (N, H)) -> (N, D or 2 D)``."""

    def __init__(self, c: DiffusionHeadConfig):
        super().__init__()
        self.time_embed = TimestepEmbedder(c.width, c.frequency_dim)
        self.cond_embed = nn.Linear(c.cond_dim, c.width)
        self.input_proj = nn.Linear(c.token_dim, c.width)
        self.res_blocks = nn.ModuleList(ResBlock(c.width) for _ in range(c.depth))
        self.final_layer = FinalLayer(c.width, c.token_dim * (2 if c.learn_sigma else 1))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform linears with zero bias; timestep MLP N(0, 0.02); adaLN modulations and output at zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        zero = [b.adaLN_modulation[-1] for b in self.res_blocks]
        zero += [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(cond)
        for block in self.res_blocks:
            h = block(h, y)
        return self.final_layer(h, y)


# ----- the head ---------------------------------------------------------------------------------------------------

def _normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _discretized_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """``-log P(x)`` of a Gaussian integrated over the bin of width 2/255 around ``x`` (open-ended at +-0.999)."""
    inv = torch.exp(-log_scale)
    centred = x - mean
    cdf_plus = torch.special.ndtr(inv * (centred + 1 / 255))
    cdf_min = torch.special.ndtr(inv * (centred - 1 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_cdf_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    logp = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_1m_cdf_min, log_delta))
    return -logp


class DiffusionHead(nn.Module):
    """The per-token diffusion head: :meth:`loss` for training, :meth:`sample` for generation.

    ``head = DiffusionHead(DiffusionHeadConfig.tiny(token_dim=8, cond_dim=256))``; ``head.loss(latents, hidden)``
    where ``latents`` are the ground-truth tokens at the image positions and ``hidden`` the LLM's hidden states that
    predict them; ``head.sample(hidden, steps=100)`` draws one token per row.

    Why ``clip_x0``: the cosine schedule ends at ``alpha_bar = 2.4e-9`` (its last beta is clipped at 0.999), so the
    first sampling step multiplies the error of the predicted noise by ``1 / sqrt(alpha_t)``: 316 at 100 respaced
    steps, 632 at 50, 32 at 1,000 (every later step: below 1.6). MAR's long-trained head predicts that noise
    precisely enough; a head trained for minutes does not. Measured on the 2-D mixture of ``tests/test_diffusion.py``
    after 400 steps (width 64): the noise error at ``t = 999`` is 0.03, and unclamped samples land at ``|x| ~ 1e3``
    (94% off every mode at 100 steps); clamping the clean-token prediction at 5 recovers the mixture (100 steps: mode
    weight 0.703 for 0.7, mode means within 0.01, spread 0.20-0.21 for 0.2, 0.05% off every mode).
    """

    def __init__(self, config: DiffusionHeadConfig | None = None):
        super().__init__()
        self.config = c = config or DiffusionHeadConfig()
        require(isinstance(c, DiffusionHeadConfig), f"DiffusionHead takes a DiffusionHeadConfig, got {c!r}")
        self.net = DenoiserMLP(c)
        self.train_schedule = NoiseSchedule(c.schedule, c.train_steps)
        self._sample_schedules: dict[int, NoiseSchedule] = {}

    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def token_dim(self) -> int:
        return self.config.token_dim

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim

    def schedule(self, steps: int) -> NoiseSchedule:
        """The respaced process of ``steps`` steps (cached)."""
        if steps not in self._sample_schedules:
            c = self.config
            self._sample_schedules[steps] = NoiseSchedule(c.schedule, c.train_steps, spaced_steps(c.train_steps, steps))
        return self._sample_schedules[steps]

    def _check_cond(self, cond: torch.Tensor, what: str = "condition") -> None:
        require(isinstance(cond, torch.Tensor) and cond.dim() == 2 and cond.shape[1] == self.cond_dim,
                f"diffusion head {what} must be a (N, {self.cond_dim}) tensor, got "
                f"{tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__}: "
                f"pass one {self.cond_dim}-dim vector per token")

    def _randn(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        dev = generator.device if generator is not None else like.device
        return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)

    def _mean_logvar(self, s: NoiseSchedule, out: torch.Tensor, x: torch.Tensor, i: torch.Tensor,
                     clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``p(x_{k-1} | x_k)``'s mean, log variance and the x0 prediction from the net's output at respaced index i."""
        d = self.token_dim
        eps = out[:, :d]
        if self.config.learn_sigma:
            frac = (out[:, d:] + 1) / 2
            logvar = frac * s.at(s.log_betas, i, x) + (1 - frac) * s.at(s.posterior_log_var, i, x)
        else:
            logvar = s.at(s.posterior_log_var, i, x).expand_as(x)
        x0 = s.at(s.sqrt_recip_abar, i, x) * x - s.at(s.sqrt_recipm1_abar, i, x) * eps
        if clip:
            x0 = x0.clamp(-clip, clip)
        mean = s.at(s.coef_x0, i, x) * x0 + s.at(s.coef_xt, i, x) * x
        return mean, logvar, x0

    def loss(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean diffusion loss of tokens ``target`` (N, D) given ``cond`` (N, H); ``mask`` (N,) weights the tokens
        (1 = counted). Each token is noised at ``batch_mul`` random steps; the result is a scalar whose gradient
        reaches ``cond`` (and so the model that produced it)."""
        per = self.token_losses(target, cond, generator)
        if mask is None:
            return per.mean()
        require(isinstance(mask, torch.Tensor) and tuple(mask.shape) == (target.shape[0],),
                f"diffusion head mask must have shape ({target.shape[0]},), got "
                f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        w = mask.to(per.dtype)
        return (per * w).sum() / w.sum().clamp(min=1.0)

    def token_losses(self, target: torch.Tensor, cond: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of every token ``(N,)``: the mean over its ``batch_mul`` noise draws (see :meth:`loss`)."""
        require(isinstance(target, torch.Tensor) and target.dim() == 2 and target.shape[1] == self.token_dim,
                f"diffusion head target must be a (N, {self.token_dim}) tensor, got "
                f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}")
        self._check_cond(cond)
        require(cond.shape[0] == target.shape[0],
                f"diffusion head got {target.shape[0]} target tokens but {cond.shape[0]} conditions: pass one each")
        c = self.config
        dtype = self._dtype()
        x0 = target.to(dtype).repeat(c.batch_mul, 1)
        z = cond.to(dtype).repeat(c.batch_mul, 1)
        n = x0.shape[0]
        dev = generator.device if generator is not None else x0.device
        t = torch.randint(0, c.train_steps, (n,), generator=generator, device=dev).to(x0.device)
        noise = self._randn(tuple(x0.shape), x0, generator)
        s = self.train_schedule
        xt = s.at(s.sqrt_abar, t, x0) * x0 + s.at(s.sqrt_1m_abar, t, x0) * noise
        out = self.net(xt, t, z)
        per = ((noise - out[:, :c.token_dim]) ** 2).mean(dim=1)
        if c.learn_sigma:
            # the variational bound trains the variance only: the mean's prediction is detached
            frozen = torch.cat([out[:, :c.token_dim].detach(), out[:, c.token_dim:]], dim=1)
            mean, logvar, _ = self._mean_logvar(s, frozen, xt, t)
            true_mean = s.at(s.coef_x0, t, x0) * x0 + s.at(s.coef_xt, t, x0) * xt
            true_logvar = s.at(s.posterior_log_var, t, x0)
            kl = _normal_kl(true_mean, true_logvar, mean, logvar).mean(dim=1) / math.log(2.0)
            nll = _discretized_nll(x0, mean, 0.5 * logvar).mean(dim=1) / math.log(2.0)
            per = per + torch.where(t == 0, nll, kl)
        return per.view(c.batch_mul, target.shape[0]).mean(0)

    def forward(self, target: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(target, cond, mask, generator)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int | None = None, temperature: float = 1.0, cfg: float = 1.0,
               uncond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one token (N, D) per condition row of ``cond`` (N, H) with respaced DDPM sampling.

        ``steps``: how many of the ``train_steps`` to take, evenly spaced (default ``config.sample_steps``).
        ``temperature``: multiplies the noise added at every step (MAR's temperature; the starting noise is not
        scaled); 1 samples the model, below 1 concentrates on its modes, 0 follows the mean path.
        ``cfg``: classifier-free guidance scale. With ``cfg != 1`` the caller passes ``uncond``, the condition the
        head was trained to see without the instruction (for example the hidden state of the same position with the
        prompt dropped, or a learned "no condition" vector as MAR's ``fake_latent``), shape (N, H) or (1, H); the
        noise prediction is ``eps_u + cfg * (eps_c - eps_u)``, the variance is the conditional one, and both branches
        share the same noisy token, as in MAR's ``forward_with_cfg``.
        """
        c = self.config
        steps = c.sample_steps if steps is None else steps
        self._check_cond(cond)
        require(isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and
                math.isfinite(temperature) and temperature >= 0,
                f"diffusion sampling temperature must be a number >= 0, got {temperature!r}")
        require(isinstance(cfg, (int, float)) and not isinstance(cfg, bool) and math.isfinite(cfg),
                f"diffusion guidance scale cfg must be a finite number, got {cfg!r}")
        guided = cfg != 1.0
        if guided:
            if uncond is None:
                raise UserError(f"classifier-free guidance (cfg={cfg}) needs the unconditional condition: pass uncond "
                                f"(N, {self.cond_dim}) or use cfg=1")
            self._check_cond(uncond, "unconditional condition")
            require(uncond.shape[0] in (1, cond.shape[0]),
                    f"diffusion head uncond has {uncond.shape[0]} rows for {cond.shape[0]} conditions: pass 1 or "
                    f"{cond.shape[0]}")
        s = self.schedule(steps)
        dtype = self._dtype()
        z = cond.to(dtype)
        if guided:
            z = torch.cat([z, uncond.to(dtype).expand_as(z)], dim=0)
        n = cond.shape[0]
        x = self._randn((n, c.token_dim), z, generator)
        for k in reversed(range(len(s))):
            i = torch.full((n,), k, dtype=torch.long, device=x.device)
            t = torch.full((z.shape[0],), int(s.timesteps[k]), dtype=torch.long, device=x.device)
            out = self.net(torch.cat([x, x]) if guided else x, t, z)
            if guided:
                oc, ou = out[:n], out[n:]
                eps = ou[:, :c.token_dim] + cfg * (oc[:, :c.token_dim] - ou[:, :c.token_dim])
                out = torch.cat([eps, oc[:, c.token_dim:]], dim=1)
            mean, logvar, _ = self._mean_logvar(s, out, x, i, c.clip_x0)
            if k > 0:
                x = mean + torch.exp(0.5 * logvar) * self._randn(tuple(x.shape), x, generator) * temperature
            else:
                x = mean
        return x
