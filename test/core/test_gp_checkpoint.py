"""GP dynamics checkpoints: a loaded GP predicts exactly what the saved one did (the same
posterior function draws, exact and sparse), a warm-started refit continues from the saved
hyperparameters, and a checkpoint of another class or of a layout that does not fit its header
is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.gp_dynamics import GPDynamics, GPDynamicsConfig, fit_gp_dynamics
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.types import TransitionBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXACT = GPDynamicsConfig(num_members=3, iterations=15, num_random_features=32,
                         angle_wrap=(0,))
SPARSE = GPDynamicsConfig(num_members=3, iterations=15, num_random_features=32,
                          max_exact_points=40, num_inducing=12, batch_size=32, kernel="matern52")


def pendulum_data(count: int, seed: int) -> TransitionBatch:
    rng = np.random.default_rng(seed)
    state = rng.uniform(-2.0, 2.0, (count, 2)).astype(np.float32)
    action = rng.uniform(-1.0, 1.0, (count, 1)).astype(np.float32)
    rate = state[:, 1] + 0.1 * (-3.0 * np.sin(state[:, 0]) + action[:, 0])
    next_state = np.stack([state[:, 0] + 0.1 * rate, rate], axis=1).astype(np.float32)
    return TransitionBatch(state, action, next_state)


def fitted(config: GPDynamicsConfig, seed: int = 3) -> GPDynamics:
    model = GPDynamics(2, 1, config)
    fit_gp_dynamics(model, pendulum_data(60, seed=0), seed=seed)
    return model


def probe_inputs():
    """States near and far from the data (the members agree near it, fan out far away)."""
    generator = torch.Generator().manual_seed(5)
    state = 4.0 * torch.randn(40, 2, generator=generator)
    return state, torch.randn(40, 1, generator=generator)


@pytest.mark.parametrize("config", [EXACT, SPARSE], ids=["exact", "sparse"])
def test_a_loaded_gp_predicts_exactly_what_the_saved_one_did(config, tmp_path):
    model = fitted(config)
    assert model.samples.sparse == (config is SPARSE)
    path = tmp_path / "model_000001.mbrl"
    sha = model.save(str(path), {"version": 1})
    for loaded in (GPDynamics.load(str(path), sha), load_model(str(path), sha)):
        assert type(loaded) is GPDynamics and loaded.config == config
        assert (loaded.num_transitions, loaded.metrics) == (60, model.metrics)
        state, action = probe_inputs()
        for got, want in zip(loaded.predict(state, action), model.predict(state, action)):
            assert torch.equal(got, want)
        per_member_state = state.expand(config.num_members, -1, -1)
        mean, _ = loaded.predict(per_member_state, action.expand(config.num_members, -1, -1))
        assert torch.equal(mean, model.predict(per_member_state, action)[0])
        assert float(model.disagreement(mean).max()) > 0.0  # the draws differ ...
        # ... and are the saved ones, member by member
        inputs = model.input_normalizer.normalize(model.encode_inputs(state, action))
        members = inputs.expand(config.num_members, -1, -1)
        assert torch.equal(loaded.member_functions(members), model.member_functions(members))
        for got, want in zip(loaded.posterior(state, action), model.posterior(state, action)):
            assert torch.equal(got, want)
        for name in ("lengthscale", "outputscale", "noise"):
            assert getattr(loaded.hyper, name).dtype == torch.float64
            assert torch.equal(getattr(loaded.hyper, name), getattr(model.hyper, name))
    assert load_checkpoint(str(path)).header["metadata"] == {"version": 1}


def test_a_refit_of_the_loaded_gp_continues_from_the_saved_hyperparameters(tmp_path):
    model = fitted(EXACT)
    path = str(tmp_path / "gp.mbrl")
    model.save(path)
    loaded = GPDynamics.load(path)
    more = pendulum_data(50, seed=1)
    fit_gp_dynamics(model, more, seed=9)
    fit_gp_dynamics(loaded, more, seed=9)
    state, action = probe_inputs()
    assert torch.equal(loaded.predict(state, action)[0], model.predict(state, action)[0])
    cold = GPDynamics(2, 1, EXACT)  # without the saved start the refit differs
    fit_gp_dynamics(cold, more, seed=9)
    assert not torch.equal(cold.predict(state, action)[0], model.predict(state, action)[0])


def test_an_unfitted_gp_round_trips_unfitted(tmp_path):
    path = str(tmp_path / "gp.mbrl")
    GPDynamics(3, 2, EXACT).save(path)
    loaded = load_model(path)
    assert isinstance(loaded, GPDynamics) and not loaded.fitted and loaded.hyper is None
    assert (loaded.state_dim, loaded.action_dim, loaded.num_members) == (3, 2, 3)


def test_checkpoints_of_another_class_or_hash_are_refused(tmp_path):
    gp_path, net_path = str(tmp_path / "gp.mbrl"), str(tmp_path / "net.mbrl")
    fitted(EXACT).save(gp_path)
    ProbabilisticEnsemble(2, 1, EnsembleConfig(num_members=2, num_elites=1,
                                               hidden_sizes=(8,))).save(net_path)
    with pytest.raises(CheckpointError, match="holds 'ProbabilisticEnsemble', not GPDynamics"):
        GPDynamics.load(net_path)
    with pytest.raises(CheckpointError, match="holds 'GPDynamics', not ProbabilisticEnsemble"):
        ProbabilisticEnsemble.load(gp_path)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(gp_path, expected_sha256="0" * 64)


def tampered(path: str, out: str, header_change=None, drop: str = "", reshape: str = "") -> str:
    """Rewrite the GP checkpoint ``path`` as ``out`` (valid file, hashes consistent) with its
    header, tensor set or one tensor's shape changed."""
    checkpoint = load_checkpoint(path)
    header = {k: v for k, v in checkpoint.header.items()
              if k not in ("format_version", "model_class", "tensors")}
    if header_change is not None:
        header_change(header)
    tensors = dict(checkpoint.tensors)
    tensors.pop(drop, None)
    if reshape:
        tensors[reshape] = torch.cat([tensors[reshape], tensors[reshape][:1]])
    save_checkpoint(out, "GPDynamics", tensors, header)
    return out


def test_a_gp_checkpoint_whose_layout_does_not_fit_its_header_is_refused(tmp_path):
    sparse_path, exact_path = str(tmp_path / "sparse.mbrl"), str(tmp_path / "exact.mbrl")
    fitted(SPARSE).save(sparse_path)
    fitted(EXACT).save(exact_path)
    assert isinstance(load_model(tampered(exact_path, str(tmp_path / "same.mbrl"))), GPDynamics)

    def members(header):
        header["config"]["num_members"] = 4

    def dense(header):
        header["layout"]["sparse"] = False

    def kernel(header):
        header["config"]["kernel"] = "rbf"

    def no_layout(header):
        del header["layout"]

    cases = [
        (dict(header_change=members), "layout mismatch: 'samples.coeff' has shape"),
        (dict(header_change=dense), "layout mismatch: tensors"),
        (dict(drop="samples.root"), "layout mismatch: tensors"),
        (dict(reshape="samples.omega"), "layout mismatch: 'samples.omega'"),
        (dict(header_change=kernel), "kernel 'matern52' is not the config's 'rbf'"),
        (dict(header_change=no_layout), "does not describe a valid GP"),
    ]
    for index, (change, message) in enumerate(cases):
        path = tampered(sparse_path, str(tmp_path / f"bad{index}.mbrl"), **change)
        with pytest.raises(CheckpointError, match=message):
            load_model(path)
