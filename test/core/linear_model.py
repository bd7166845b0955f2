"""A linear stand-in dynamics model (``x' = A x + B u`` for every member) shared by the
planner tests."""

import torch


class LinearModel:
    """``num_members`` identical members ``x' = A x + B u`` (the planner's dynamics interface);
    each member's predicted variance is ``variance``."""

    def __init__(self, A, B, num_members=2, variance=0.0):
        self.A = torch.as_tensor(A, dtype=torch.float32)
        self.B = torch.as_tensor(B, dtype=torch.float32)
        self.num_members, self.variance = num_members, variance
        self.state_dim, self.action_dim = self.A.shape[0], self.B.shape[1]
        self.device = torch.device("cpu")

    def predict(self, state, action):
        mean = state @ self.A.T + action @ self.B.T
        if mean.dim() == 2:
            mean = mean.expand(self.num_members, *mean.shape)
        return mean, torch.full_like(mean, self.variance)
