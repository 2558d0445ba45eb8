"""Next-concept-vector models: read 5 context vectors (B, 5, D), predict the next one (B, D). Every model from
`build_model` is an `LVM`, a wrapper around a *core* network (B, 5, in_dim) -> (B, D); its API and options:
docs/architecture.md. Parameter counts at D=768 match SPEC's table (tests/model)."""
from __future__ import annotations

import inspect
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError
from .data.bank import CONTEXT  # the window length, defined once


class ModelError(InputError):
    """A model asked for with a bad name, option or input."""


def _as_tensor(vectors) -> torch.Tensor:
    return torch.as_tensor(np.asarray(vectors, dtype=np.float32))


# Baselines: no training. They read only the first out_dim input columns, so a positional
# channel (if someone asks for one) does not change them.

class LinearAverage(nn.Module):
    """normalize(mean(ctx)): the baseline every model must beat."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim

    def forward(self, x):
        return x[..., : self.out_dim].mean(dim=1)


class CopyLast(LinearAverage):
    """ctx[-1]: what a collapsed model does."""

    def forward(self, x):
        return x[:, -1, : self.out_dim]


class GlobalMean(LinearAverage):
    """The mean of the TRAINING targets, whatever the context (SPEC defect 8: never hard-coded); its raw output is
    the plain mean (the MSE-optimal constant), which the wrapper normalises."""

    def __init__(self, in_dim: int, out_dim: int, mean=None):
        super().__init__(in_dim, out_dim)
        self.register_buffer("mean", torch.zeros(out_dim))
        self.register_buffer("fitted", torch.tensor(False))
        if mean is not None:
            self.fit(_as_tensor(mean)[None])    # the mean of one row is that row, exactly

    def fit(self, targets):
        targets = _as_tensor(targets)
        if targets.ndim != 2 or targets.shape[0] == 0 or targets.shape[1] != self.out_dim:
            raise ModelError(f"global_mean.fit needs (N, {self.out_dim}) training targets (mean=: ({self.out_dim},)), "
                             f"got {tuple(targets.shape)}")
        self.mean.copy_(targets.double().mean(dim=0).float())   # float64 sum, as metrics.train_target_mean
        self.fitted.fill_(True)

    def forward(self, x):
        if not bool(self.fitted):
            raise ModelError("global_mean has no mean yet: pass mean= or call model.fit(training targets)")
        return self.mean.expand(x.shape[0], -1)


# Trained cores (SPEC table). Each maps (B, 5, in_dim) -> raw (B, out_dim).

class AMN(nn.Module):
    """Attention-mixture network: raw = b + MLP([b | softmax(W_q b . W_k x / sqrt(attn_dim)) @ x]), b = sum_t w_t x_t
    with 5 learned weights from 1/5, MLP 2D -> 512 -> GELU -> LN -> 256 -> GELU -> LN -> D with its last layer at
    zero: AMN starts as the linear average (baseline_start=False: the original's b = mean and noisy start).
    1,510,917 parameters at D=768 (SPEC: 1.51M)."""

    def __init__(self, in_dim: int, out_dim: int, attn_dim: int = 256, hidden: int = 512, mid: int = 256,
                 baseline_start: bool = True):
        super().__init__()
        self.out_dim = out_dim
        self.query = nn.Linear(in_dim, attn_dim)
        self.key = nn.Linear(in_dim, attn_dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_dim, hidden), nn.GELU(), nn.LayerNorm(hidden),
            nn.Linear(hidden, mid), nn.GELU(), nn.LayerNorm(mid),
            nn.Linear(mid, out_dim),
        )
        self.position_weights = nn.Parameter(torch.full((CONTEXT,), 1 / CONTEXT), requires_grad=baseline_start)
        if baseline_start:
            zero_output_layer(self.mlp)

    def forward(self, x):
        b = torch.einsum("t,btd->bd", self.position_weights, x)         # (B, in)
        q, k = self.query(b), self.key(x)                               # (B, A), (B, 5, A)
        scores = torch.einsum("ba,bta->bt", q, k) / math.sqrt(q.shape[-1])
        wctx = torch.einsum("bt,btd->bd", scores.softmax(dim=-1), x)    # attention-weighted context
        return b[:, : self.out_dim] + self.mlp(torch.cat([b, wctx], dim=-1))


def zero_output_layer(module: nn.Module) -> None:
    """Zero the last Linear of a core's output layer, so a correction on top of a baseline starts at 0."""
    last = module[-1] if isinstance(module, nn.Sequential) else module
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


class LSTMCore(nn.Module):
    """2-layer LSTM (hidden 512, dropout 0.2); last step -> Linear(512, D). 5,120,768 params at D=768."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x):
        if torch.is_autocast_enabled(x.device.type):    # oneDNN's bf16 LSTM refuses an fp32 input under autocast
            x = x.to(torch.get_autocast_dtype(x.device.type))
        h, _ = self.lstm(x)
        return self.head(h[:, -1])


class GRUCore(nn.Module):
    """Linear(D, 512); 4 blocks h = LN(h + GRU(h)); last step -> Linear(512, D). 7,095,552 params at D=768."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, blocks: int = 4):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.grus = nn.ModuleList(nn.GRU(hidden, hidden, batch_first=True) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x):
        h = self.proj(x)
        for gru, norm in zip(self.grus, self.norms):
            h = norm(h + gru(h)[0])
        return self.head(h[:, -1])


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe


class TransformerCore(nn.Module):
    """Linear(D, 512) + sinusoidal PE; 4 causal decoder layers (8 heads, FF 2048, dropout 0.1); last position
    -> Linear(512, 512) -> GELU -> LN -> Linear(512, D). SPEC's 17.9M needs nn.TransformerDecoderLayer: causal
    self-attention plus cross-attention to the (causally masked) projected input itself; encoder layers give 13.7M."""

    def __init__(self, in_dim: int, out_dim: int, d_model: int = 512, layers: int = 4, heads: int = 8,
                 ff: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.register_buffer("pe", sinusoidal_positions(CONTEXT, d_model), persistent=False)
        layer = nn.TransformerDecoderLayer(d_model, heads, ff, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.LayerNorm(d_model),
                                  nn.Linear(d_model, out_dim))

    def forward(self, x):
        h = self.proj(x) + self.pe[: x.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], x.device)   # i sees <= i
        h = self.decoder(h, h, tgt_mask=mask, memory_mask=mask)
        return self.head(h[:, -1])


def decay_mask(n: int, decay: float = 0.6, window: int = 2) -> torch.Tensor:
    """GraphMERT's attention bias: 0 within `window` positions, -1e9 * (1 - decay**d) beyond."""
    d = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs().float()
    return torch.where(d <= window, torch.zeros_like(d), -1e9 * (1 - decay ** d))


class GraphMERTCore(nn.Module):
    """12 encoder layers (d=768, 8 heads, FF 2048), learned positions, distance-decay attention mask, mean-pool
    -> Linear(d, d) -> GELU -> Linear(d, D); the input is projected only when in_dim != d_model."""

    def __init__(self, in_dim: int, out_dim: int, d_model: int = 768, layers: int = 12, heads: int = 8,
                 ff: int = 2048, dropout: float = 0.1, decay: float = 0.6, window: int = 2):
        super().__init__()
        self.proj = nn.Identity() if in_dim == d_model else nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.randn(CONTEXT, d_model) * 0.02)
        self.register_buffer("mask", decay_mask(CONTEXT, decay, window), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, out_dim))

    def forward(self, x):
        h = self.proj(x) + self.pos[: x.shape[1]]
        h = self.encoder(h, mask=self.mask[: x.shape[1], : x.shape[1]])
        return self.head(h.mean(dim=1))


class BaseLCM(nn.Module):
    """Base-LCM (Meta, "Large Concept Models"): MSE next-embedding prediction at every position of a causal
    pre-LN decoder, between a robust scaler (x - center) / spread + Linear (pre-net) and Linear, then unscaling
    (post-net). center/spread: per-dimension median and IQR/1.349 from fit(); fixed to 0 and `scale` if given;
    0 and 1/sqrt(D) before fit(). Extra input columns (a positional channel) pass the scaler unchanged."""

    def __init__(self, in_dim: int, out_dim: int, d_model: int = 512, layers: int = 4, heads: int = 8,
                 ff: int = 2048, dropout: float = 0.1, scale: float | None = None):
        super().__init__()
        self.out_dim = out_dim
        self.fixed_scale = scale
        self.register_buffer("center", torch.zeros(out_dim))
        self.register_buffer("spread", torch.full((out_dim,), float(scale) if scale else 1 / math.sqrt(out_dim)))
        self.pre_net = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.randn(CONTEXT, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.decoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.post_net = nn.Linear(d_model, out_dim)
        self.add_center = True      # False on top of a baseline (LVM baseline_start): the correction alone

    def fit(self, vectors):
        if self.fixed_scale is not None:
            return  # a fixed scale was asked for
        v = _as_tensor(vectors)
        if v.ndim != 2 or v.shape[1] != self.out_dim or v.shape[0] < 2:
            raise ModelError(f"base_lcm.fit needs (N>=2, {self.out_dim}) training vectors, got {tuple(v.shape)}")
        q25, q50, q75 = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75]), dim=0)
        self.center.copy_(q50)
        self.spread.copy_(((q75 - q25) / 1.349).clamp_min(1e-6))

    def all_positions(self, x):
        d = self.out_dim
        scaled = torch.cat([(x[..., :d] - self.center) / self.spread, x[..., d:]], dim=-1)
        h = self.pre_net(scaled) + self.pos[: x.shape[1]]
        h = self.decoder(h, mask=nn.Transformer.generate_square_subsequent_mask(x.shape[1], x.device), is_causal=True)
        out = self.post_net(h) * self.spread
        return out + self.center if self.add_center else out

    def forward(self, x):
        return self.all_positions(x)[:, -1]


CORES = {
    "linear_average": LinearAverage, "copy_last": CopyLast, "global_mean": GlobalMean, "amn": AMN,
    "lstm": LSTMCore, "gru": GRUCore, "transformer": TransformerCore, "graphmert": GraphMERTCore,
    "base_lcm": BaseLCM,
}
MODEL_NAMES = tuple(CORES)


# Generative heads on top of any core: conditional flow matching, and the energy score.

FLOW_DEFAULTS = {"flow_hidden": 512, "flow_layers": 3, "flow_steps": 10, "flow_samples": 1,
                 "flow_noise": 1.0, "flow_seed": 0}
ENERGY_DEFAULTS = {"energy_hidden": 256, "energy_layers": 2, "energy_noise_dim": 64, "energy_train_samples": 4,
                   "energy_samples": 8, "energy_beta": 1.0, "energy_seed": 0}
TIME_DIM = 64   # sinusoidal features of the flow time t


def time_embedding(t: torch.Tensor, dim: int = TIME_DIM) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sin/cos features (diffusion-style, t scaled by 1000)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angle = (t.float() * 1000.0)[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def check_ints(prefix: str, **values) -> None:
    """Each option name=(value, lowest allowed or None): an int (not a bool), else a ModelError naming it."""
    for key, (value, low) in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            raise ModelError(f"{prefix}{key} must be an int{f' >= {low}' if low is not None else ''}, got {value!r}")


class ResidualMLP(nn.Module):
    """Linear(hidden) -> SiLU, layers-1 blocks h += SiLU(Linear(LayerNorm(h))), LayerNorm -> Linear(out)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU())
                                    for _ in range(layers - 1))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, out_dim))

    def forward(self, x):
        h = F.silu(self.inp(x))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class _SamplingHead(nn.Module):
    """A generative head: draw(c, noise) turns conditions (N, D) and noise (N, noise_dim) into samples (N, D). A
    prediction is the mean of `samples` draws from a seeded generator: a function of weights and input."""

    def draws(self, c: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, n, D): n samples per row, the noise from `generator` (global RNG if None)."""
        b, d = c.shape
        noise = torch.randn(b * n, self.noise_dim, generator=generator, device=c.device).to(c.dtype)
        return self.draw(c.repeat_interleave(n, dim=0), noise).view(b, n, d)

    def sample(self, c: torch.Tensor) -> torch.Tensor:
        """(B, D): the mean of `samples` seeded draws (not normalised)."""
        return self.draws(c, self.samples, torch.Generator(device=c.device).manual_seed(self.seed)).mean(dim=1)


class FlowHead(_SamplingHead):
    """Conditional flow matching (rectified flow) from N(0, noise^2 I) to y * sqrt(D) given c (`loss`, `draw`); v has
    a learned linear skip from LayerNorm(c) (without it joint training was much slower: docs/architecture.md)."""

    def __init__(self, dim: int, hidden: int = 512, layers: int = 3, steps: int = 10, samples: int = 1,
                 noise: float = 1.0, seed: int = 0):
        super().__init__()
        check_ints("flow_", hidden=(hidden, 1), layers=(layers, 1), steps=(steps, 1), samples=(samples, 1),
                   seed=(seed, None))
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise > 0:
            raise ModelError(f"flow_noise must be a number > 0, got {noise!r}")
        self.dim = self.noise_dim = dim
        self.steps, self.samples, self.noise, self.seed = steps, samples, float(noise), seed
        self.cond_norm = nn.LayerNorm(dim)   # the core's output has whatever scale it likes
        self.mlp = ResidualMLP(2 * dim + TIME_DIM, hidden, layers, dim)
        self.skip = nn.Linear(dim, dim)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = self.cond_norm(c)
        return self.mlp(torch.cat([x, c, time_embedding(t).to(x.dtype)], dim=-1)) + self.skip(c)

    def loss(self, c: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss; the noise and times come from `generator` (global RNG if None)."""
        b, d = target.shape
        x1 = target * math.sqrt(d)
        x0 = torch.randn(b, d, generator=generator, device=c.device).to(c.dtype) * self.noise
        t = torch.rand(b, generator=generator, device=c.device).to(c.dtype)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        return F.mse_loss(self.velocity(xt, t, c), x1 - x0)   # mean over B*D: ||.||^2 / D per row

    def draw(self, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The noise (std `noise`) integrated to t = 1 in `steps` Euler steps, in target scale (/ sqrt(D))."""
        x = noise * self.noise
        dt = 1.0 / self.steps
        for i in range(self.steps):
            x = x + dt * self.velocity(x, torch.full((len(x),), i * dt, device=c.device, dtype=c.dtype), c)
        return x / math.sqrt(self.dim)


class EnergyHead(_SamplingHead):
    """A sampler x = c + MLP([LayerNorm(c) | eps]) / sqrt(D) trained with the energy score (CALM, 2025), strictly
    proper for 0 < beta < 2 (minimised when the draws follow the true conditional distribution of y):

        loss = 1/m sum_i ||x_i - y||^beta  -  1/(2 m (m-1)) sum_{i != j} ||x_i - x_j||^beta"""

    def __init__(self, dim: int, hidden: int = 256, layers: int = 2, noise_dim: int = 64, train_samples: int = 4,
                 samples: int = 8, beta: float = 1.0, seed: int = 0):
        super().__init__()
        check_ints("energy_", hidden=(hidden, 1), layers=(layers, 1), noise_dim=(noise_dim, 1),
                   train_samples=(train_samples, 2), samples=(samples, 1), seed=(seed, None))
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < 2:
            raise ModelError(f"energy_beta must be a number in (0, 2) (a proper scoring rule), got {beta!r}")
        self.dim, self.noise_dim, self.train_samples = dim, noise_dim, train_samples
        self.samples, self.beta, self.seed = samples, float(beta), seed
        self.cond_norm = nn.LayerNorm(dim)
        self.mlp = ResidualMLP(dim + noise_dim, hidden, layers, dim)

    def draw(self, c: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return c + self.mlp(torch.cat([self.cond_norm(c), noise], dim=-1)) / math.sqrt(self.dim)

    def loss(self, c: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The energy score of train_samples draws per row against the target, averaged over rows."""
        x = self.draws(c, self.train_samples, generator)                          # (B, m, D)
        m = self.train_samples
        to_target = energy_distance(x, target[:, None, :], self.beta).mean(dim=1)   # (B,)
        i, j = torch.triu_indices(m, m, offset=1, device=c.device)               # each unordered pair once
        spread = energy_distance(x[:, i], x[:, j], self.beta).mean(dim=1)        # = sum_{i!=j} / (m(m-1))
        return (to_target - 0.5 * spread).mean()


def energy_distance(a: torch.Tensor, b: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """||a - b||^beta over the last dimension. A tiny floor inside the square root keeps the gradient
    finite where two vectors coincide (the norm's gradient is undefined at 0)."""
    return ((a - b).pow(2).sum(dim=-1) + 1e-12).pow(beta / 2)


HEADS = {"flow": (FlowHead, FLOW_DEFAULTS), "energy": (EnergyHead, ENERGY_DEFAULTS)}
WRAPPER_OPTIONS = ("residual", "positional_scale", "alpha_floor", "alpha_init", "baseline_start")   # LVM's own


def output_layer(core: nn.Module) -> nn.Module | None:
    """The layer a core's output comes from (None for the parameter-free baselines)."""
    return next((getattr(core, n) for n in ("head", "post_net", "mlp") if hasattr(core, n)), None)


class PositionWeighted(nn.Module):
    """The learned position-weighted context sum sum_i w_i ctx_i (w_i from 1/5): the baseline a baseline-start core
    corrects. at_every_position gives position i the sum over ctx[..i] with the weights of the i+1 latest slots,
    rescaled to the same total weight, so a model that predicts every position starts at each prefix's average."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.weights = nn.Parameter(torch.full((CONTEXT,), 1 / CONTEXT))

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return torch.einsum("t,btd->bd", self.weights.to(ctx.dtype), ctx[..., : self.dim])

    def at_every_position(self, ctx: torch.Tensor) -> torch.Tensor:
        n, w = ctx.shape[1], self.weights.to(ctx.dtype)
        lag = torch.arange(n, device=ctx.device)[:, None] - torch.arange(n, device=ctx.device)[None, :]  # i - j
        mix = torch.where(lag >= 0, w[(n - 1 - lag).clamp(0, n - 1)], torch.zeros((), dtype=w.dtype))   # (i, j)
        mix = mix * (w.sum() / mix.sum(dim=1, keepdim=True))
        return torch.einsum("ij,bjd->bid", mix, ctx[..., : self.dim])


class LVM(nn.Module):
    """The wrapper every model is: checks the input, adds the positional channel, the baseline start (docs/
    architecture.md), the residual option and a generative head (`head`: None, "flow" or "energy", the module in the
    attribute of that name)."""

    def __init__(self, core: nn.Module, config: dict, dim: int, residual: bool = False,
                 positional_scale: float | None = None, alpha_floor: float = 0.05, alpha_init: float = 0.5,
                 flow: FlowHead | None = None, energy: EnergyHead | None = None, baseline_start: bool = False):
        super().__init__()
        if flow is not None and energy is not None:
            raise ModelError("a model has one head: flow or energy, not both")
        self.core, self.config, self.dim = core, config, dim
        self.flow, self.energy = flow, energy
        self.head = "flow" if flow is not None else "energy" if energy is not None else None
        self.baseline = None
        if baseline_start:
            if output_layer(core) is None:
                raise ModelError(f"{config['name']}: baseline_start needs a trained core (it has no output layer)")
            self.baseline = PositionWeighted(dim)
            if hasattr(core, "add_center"):
                core.add_center = False
        self.residual, self.positional_scale = residual, positional_scale
        if positional_scale is not None:
            self.register_buffer("position_channel",
                                 torch.linspace(0, 1, CONTEXT).mul(float(positional_scale))[:, None], persistent=False)
        if residual:
            if not (0 <= alpha_floor < alpha_init):
                raise ModelError(f"residual needs 0 <= alpha_floor < alpha_init, got {alpha_floor}, {alpha_init}")
            self.alpha_floor = alpha_floor
            # alpha = floor + softplus(rho); rho chosen so alpha starts at alpha_init
            self.alpha_rho = nn.Parameter(torch.tensor(math.log(math.expm1(alpha_init - alpha_floor))))
        # the correction starts at zero, so the model starts as its baseline (residual: copy-last), not as noise
        if (baseline_start or residual) and output_layer(core) is not None:   # parameter-free baselines have none
            zero_output_layer(output_layer(core))

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def alpha(self) -> torch.Tensor:
        return self.alpha_floor + F.softplus(self.alpha_rho)

    @property
    def predicts_every_position(self) -> bool:
        return hasattr(self.core, "all_positions") and self.head is None

    def _input(self, ctx: torch.Tensor) -> torch.Tensor:
        if ctx.ndim != 3 or ctx.shape[1] != CONTEXT or ctx.shape[2] != self.dim:
            raise ModelError(f"{self.name}: expected context of shape (B, {CONTEXT}, {self.dim}), "
                             f"got {tuple(ctx.shape)}")
        if self.positional_scale is None:
            return ctx
        return torch.cat([ctx, self.position_channel.to(ctx.dtype).expand(ctx.shape[0], -1, -1)], dim=-1)

    def _residual(self, out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The core's output after the residual option: normalize(last) + alpha * out."""
        return (F.normalize(last, dim=-1) + self.alpha * out) if self.residual else out

    def condition(self, ctx: torch.Tensor) -> torch.Tensor:
        """The core's output on its baseline, after the residual option: the raw prediction or a head's condition."""
        out = self.core(self._input(ctx))
        if self.baseline is not None:
            out = self.baseline(ctx) + out
        return self._residual(out, ctx[:, -1])

    def raw(self, ctx: torch.Tensor) -> torch.Tensor:
        c = self.condition(ctx)
        return c if self.head is None else getattr(self, self.head).sample(c)

    def head_loss(self, ctx: torch.Tensor, target: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """The generative head's `loss` on this context's condition; noise from `generator` (global RNG if None)."""
        if self.head is None:
            raise ModelError(f"{self.name} has no generative head (build it with head='flow' or head='energy')")
        return getattr(self, self.head).loss(self.condition(ctx), target, generator)

    def raw_all(self, ctx: torch.Tensor) -> torch.Tensor:
        """(B, 5, D): position i predicts the vector after ctx[i] (models that predict every position)."""
        if self.head is not None:
            raise ModelError(f"{self.name} with head='{self.head}' predicts the last position only (no raw_all)")
        if not self.predicts_every_position:
            raise ModelError(f"{self.name} predicts the last position only; raw_all needs base_lcm")
        out = self.core.all_positions(self._input(ctx))
        if self.baseline is not None:
            out = self.baseline.at_every_position(ctx) + out
        return self._residual(out, ctx)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(ctx), dim=-1)

    def fit(self, vectors) -> "LVM":
        """Fit statistics that come from the training vectors (global mean, robust scaler)."""
        if hasattr(self.core, "fit"):
            self.core.fit(vectors)
        return self


def build_model(name: str, dim: int = 384, **options) -> LVM:
    """Build a model by name. Options: the core's own plus residual, positional_scale, alpha_floor, alpha_init and
    head (None, "flow" or "energy") with its FLOW_DEFAULTS or ENERGY_DEFAULTS options; an unknown one is an error."""
    if name not in CORES:
        raise ModelError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if not isinstance(dim, int) or dim < 2:
        raise ModelError(f"dim must be an int >= 2, got {dim!r}")
    own = inspect.signature(CORES[name]).parameters    # AMN's own baseline_start: its MLP reads the weighted sum too
    wrapper = {k: options.pop(k) for k in WRAPPER_OPTIONS if k in options and k not in own}
    head = options.pop("head", None)
    given = {h: {k: options.pop(k) for k in defaults if k in options} for h, (_, defaults) in HEADS.items()}
    if head not in (None, *HEADS):
        raise ModelError(f"model {name!r}: unknown head {head!r}; expected one of {(None, *HEADS)}")
    for h, keys in given.items():
        if keys and h != head:
            raise ModelError(f"model {name!r}: {', '.join(sorted(keys))} need head='{h}'"
                             + (f", not head='{head}'" if head else ""))
    in_dim = dim if wrapper.get("positional_scale") is None else dim + 1
    try:
        core = CORES[name](in_dim, dim, **options)
    except TypeError as e:
        raise ModelError(f"model {name!r}: bad option ({e})") from None
    config = {"name": name, "dim": dim, **options, **wrapper}
    config.pop("mean", None)  # data, not architecture: it travels in the state dict
    heads = {}
    if head is not None:
        # every head option is written into the config, so a later change of defaults cannot
        # silently change how a saved model samples
        head_class, defaults = HEADS[head]
        head_options = {**defaults, **given[head]}
        heads[head] = head_class(dim, **{k.removeprefix(f"{head}_"): v for k, v in head_options.items()})
        config.update(head=head, **head_options)
    return LVM(core, config, dim, **wrapper, **heads)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
