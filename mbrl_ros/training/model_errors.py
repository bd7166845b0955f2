"""Model error measures shared by the trainer (deployment decisions) and the evaluate tool."""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.core.types import TransitionBatch


def delta_scale(batch: TransitionBatch) -> np.ndarray:
    """[S] std of the state change per dimension (1 where a dimension never changes)."""
    scale = np.std(batch.next_state - batch.state, axis=0)
    return np.where(scale > 1e-9, scale, 1.0)


def predict_mean(model, state: np.ndarray, action: np.ndarray,
                 chunk: int = 8192) -> tuple:
    """Ensemble-mean prediction and disagreement for rows ``state [N, S]``, ``action [N, A]``.

    Returns ``(mean [N, S], member_means [E, N, S], variance [E, N, S])`` as numpy arrays.
    """
    means, variances = [], []
    with torch.no_grad():
        for start in range(0, len(state), chunk):
            s = torch.as_tensor(state[start:start + chunk], device=model.device)
            a = torch.as_tensor(action[start:start + chunk], device=model.device)
            mean, var = model.predict(s, a)
            means.append(mean.cpu().numpy())
            variances.append(var.cpu().numpy())
    member_means = np.concatenate(means, axis=1)
    return member_means.mean(0), member_means, np.concatenate(variances, axis=1)


def normalised_one_step_mse(model, batch: TransitionBatch) -> float:
    """Mean squared one-step error of the ensemble mean, each dimension divided by the std of
    its state change in ``batch``, so models with different normalisers compare fairly."""
    if model is None or len(batch) == 0:
        return float("inf")
    mean, _, _ = predict_mean(model, batch.state, batch.action)
    error = (mean - batch.next_state) / delta_scale(batch)
    value = float(np.mean(np.square(error)))
    return value if np.isfinite(value) else float("inf")
