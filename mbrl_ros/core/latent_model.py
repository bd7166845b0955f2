"""TD-MPC2-style latent world model: encoder, latent dynamics, reward, Q ensemble, policy prior.

Everything lives in a learned latent space: ``z = encode(state)``, ``z' = next(z, a)``,
``r = reward(z, a)``, ``Q(z, a)`` (an ensemble of ``num_q`` heads, with EMA target copies)
and a tanh-Gaussian policy prior ``pi(z)``. Actions are normalised to ``[-1, 1]``. Latents
are simplicially normalised (softmax over groups of ``simnorm_dim``), rewards and values are
two-hot regressions in symlog space. Nothing here reconstructs the physical state: the model
is trained for planning only (see :mod:`mbrl_ros.core.latent_training`), and the safety gate
and RViz cannot use its predictions.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch

from mbrl_ros.core.checkpoint import load_checkpoint, save_checkpoint
from mbrl_ros.core.latent_config import LatentModelConfig
from mbrl_ros.core.latent_layers import NormedEnsembleMLP, SingleMLP, TwoHot

MODEL_CLASS = "LatentWorldModel"
"""``model_class`` of the checkpoint header."""
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
TANH_EPS = 1e-6
"""Keeps log(1 - tanh^2) finite at saturated actions."""
Q_PAIR = 2
"""Q heads drawn at random for targets (min) and for the policy and planner (mean)."""


@dataclass
class PolicySample:
    """A draw of the policy prior (all normalised, ``[..., A]`` or ``[...]``)."""

    action: torch.Tensor
    mean: torch.Tensor
    """tanh of the Gaussian mean: the deterministic action."""
    log_prob: torch.Tensor
    """Log density of ``action`` (after the squash), ``[...]``."""


class LatentWorldModel(torch.nn.Module):
    """The networks of a TD-MPC2 agent for ``state_dim``-dimensional states."""

    def __init__(self, state_dim: int, action_dim: int,
                 config: LatentModelConfig = LatentModelConfig(), seed: int = 0) -> None:
        super().__init__()
        self.config = config.validate()
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        gen = torch.Generator().manual_seed(seed)
        latent, hidden, group = config.latent_dim, config.mlp_hidden, config.simnorm_dim
        za = latent + action_dim
        kw = {"generator": gen, "activation": config.activation}
        self.encoder = SingleMLP(state_dim, config.encoder_hidden, latent, group, **kw)
        self.dynamics = SingleMLP(za, hidden, latent, group, **kw)
        self.reward_head = SingleMLP(za, hidden, config.num_bins, zero_output=True, **kw)
        self.policy = SingleMLP(latent, hidden, 2 * action_dim, **kw)
        self.qs = NormedEnsembleMLP(config.num_q, za, hidden, config.num_bins,
                                    dropout=config.q_dropout, zero_output=True, **kw)
        self.target_qs = NormedEnsembleMLP(config.num_q, za, hidden, config.num_bins,
                                           dropout=config.q_dropout, **kw)
        self.target_qs.load_state_dict(self.qs.state_dict())
        self.target_qs.requires_grad_(False)
        self.two_hot = TwoHot(config.num_bins, config.value_min, config.value_max)
        self.eval()  # dropout only inside LatentTrainer.update

    @property
    def device(self) -> torch.device:
        return self.encoder.weights[0].device

    def train(self, mode: bool = True) -> "LatentWorldModel":
        """Switch training mode; the target Q-functions always stay in eval mode."""
        super().train(mode)
        self.target_qs.train(False)
        return self

    # ------------------------------------------------------------------------ components
    def encode(self, state: torch.Tensor) -> torch.Tensor:
        """``[..., S]`` -> latents ``[..., L]``."""
        return self.encoder(state)

    def next(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Latent dynamics ``[..., L], [..., A] -> [..., L]``."""
        return self.dynamics(torch.cat([z, action], dim=-1))

    def reward_logits(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``[..., L], [..., A] -> [..., num_bins]``."""
        return self.reward_head(torch.cat([z, action], dim=-1))

    def reward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Predicted reward ``[...]``."""
        return self.two_hot.decode(self.reward_logits(z, action))

    def pi(self, z: torch.Tensor, generator: Optional[torch.Generator] = None
           ) -> PolicySample:
        """Sample the tanh-Gaussian policy prior at latents ``[..., L]``."""
        mean, raw_log_std = self.policy(z).chunk(2, dim=-1)
        c = self.config
        log_std = c.log_std_min + 0.5 * (c.log_std_max - c.log_std_min) * \
            (torch.tanh(raw_log_std) + 1.0)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        gaussian = mean + eps * log_std.exp()
        log_prob = (-0.5 * eps.square() - log_std - LOG_SQRT_2PI).sum(-1)
        action = torch.tanh(gaussian)
        log_prob = log_prob - torch.log(torch.relu(1.0 - action.square()) + TANH_EPS).sum(-1)
        return PolicySample(action=action, mean=torch.tanh(mean), log_prob=log_prob)

    def q_logits(self, z: torch.Tensor, action: torch.Tensor, target: bool = False,
                 members: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[..., L], [..., A]`` -> ``[E, ..., num_bins]`` for all (or ``members``) heads."""
        x = torch.cat([z, action], dim=-1)
        lead = x.shape[:-1]
        net = self.target_qs if target else self.qs
        out = net(x.reshape(-1, x.shape[-1]), members)
        return out.reshape(out.shape[0], *lead, out.shape[-1])

    def q(self, z: torch.Tensor, action: torch.Tensor, reduce: str = "min",
          target: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Q-values ``[...]``: the min (``"min"``) or mean (``"avg"``) of two heads drawn at
        random, or all heads ``[E, ...]`` (``"all"``)."""
        if reduce == "all":
            return self.two_hot.decode(self.q_logits(z, action, target))
        pair = torch.randperm(self.config.num_q, generator=generator)[:Q_PAIR].to(z.device)
        values = self.two_hot.decode(self.q_logits(z, action, target, pair))
        if reduce == "min":
            return values.min(dim=0).values
        if reduce == "avg":
            return values.mean(dim=0)
        raise ValueError(f"reduce must be 'min', 'avg' or 'all', got {reduce!r}")

    @torch.no_grad()
    def soft_update_targets(self) -> None:
        """EMA of the target Q-functions toward the online ones (rate ``config.tau``)."""
        torch._foreach_lerp_(list(self.target_qs.parameters()), list(self.qs.parameters()),
                             self.config.tau)

    # ------------------------------------------------------------------------- save / load
    def save(self, path: str, metadata: Optional[dict] = None) -> str:
        """Write a checkpoint (:mod:`mbrl_ros.core.checkpoint`); returns its sha256."""
        config = dataclasses.asdict(self.config)
        header = {"config": config, "state_dim": self.state_dim,
                  "action_dim": self.action_dim, "metadata": metadata or {}}
        return save_checkpoint(path, MODEL_CLASS, self.state_dict(), header)

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu",
             expected_sha256: Optional[str] = None) -> "LatentWorldModel":
        """Rebuild a model written by :meth:`save` (raises CheckpointError on a bad file)."""
        checkpoint = load_checkpoint(path, expected_sha256)
        header = checkpoint.require_class(MODEL_CLASS)
        fields = header["config"]
        for name in ("encoder_hidden", "mlp_hidden"):
            fields[name] = tuple(fields[name])
        model = cls(int(header["state_dim"]), int(header["action_dim"]),
                    LatentModelConfig(**fields))
        model.load_state_dict(checkpoint.tensors)
        return model.to(device)
