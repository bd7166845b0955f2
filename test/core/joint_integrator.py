"""A one-joint stand-in dynamics model shared by the controller tests."""

import torch

DT = 0.1
"""Its model period [s]."""


class JointIntegrator:
    """One joint: state [q, qd], action = position target reached in one step (q+ = u); one
    member, so the dynamics' own disagreement is zero."""

    num_members, state_dim, action_dim = 1, 2, 1
    device = torch.device("cpu")

    def predict(self, state, action):
        shape = torch.broadcast_shapes(state[..., :1].shape, action.shape)
        position, action = state[..., :1].expand(shape), action.expand(shape)
        mean = torch.cat([action, (action - position) / DT], -1)
        mean = mean if mean.dim() == 3 else mean.unsqueeze(0)
        return mean, torch.zeros_like(mean)
