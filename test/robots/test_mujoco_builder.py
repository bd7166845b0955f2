"""Position actuators get one stiffness/damping for all joints or one per joint."""

from pathlib import Path

import numpy as np
import pytest

from mbrl_ros.robots.mismatch import MismatchConfig
from mbrl_ros.robots.mujoco_builder import BuildOptions, build_mujoco_model
from mbrl_ros.robots.simulator import Simulator

ARM = str(Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf")
KP = (400.0, 350.0, 300.0, 200.0, 100.0, 50.0, 20.0)  # heavy shoulder to light wrist
KV = (40.0, 35.0, 30.0, 20.0, 10.0, 5.0, 2.0)


def _gains(model, info):
    """(kp, kv) per joint of the compiled position actuators, in info.joint_names order."""
    ids = [model.actuator(name).id for name in info.actuator_names]
    gain, bias = model.actuator_gainprm[ids], model.actuator_biasprm[ids]
    np.testing.assert_allclose(bias[:, 1], -gain[:, 0])  # PD servo: force = kp (q* - q) - kv v
    return gain[:, 0], -bias[:, 2]


def test_per_joint_gains_reach_each_actuator():
    model, info = build_mujoco_model(ARM, BuildOptions(control_mode="position",
                                                       position_kp=KP, position_kv=KV))
    assert info.joint_names == tuple(f"arm_joint{i}" for i in range(1, 8))
    for joint, name, kp, kv in zip(info.joint_names, info.actuator_names, KP, KV):
        actuator = model.actuator(name)
        assert model.joint(int(model.actuator_trnid[actuator.id, 0])).name == joint
        assert actuator.gainprm[0] == pytest.approx(kp)
        assert actuator.biasprm[1] == pytest.approx(-kp)
        assert actuator.biasprm[2] == pytest.approx(-kv)


def test_simulator_with_default_mismatch_keeps_gains_and_scale_applies_per_joint():
    build = BuildOptions(control_mode="position", position_kp=KP, position_kv=KV)
    nominal = Simulator(ARM, build)  # default MismatchConfig: actuator_gain_scale = 1
    assert MismatchConfig().actuator_gain_scale == 1.0
    kp, kv = _gains(nominal.model, nominal.info)
    np.testing.assert_allclose(kp, KP)
    np.testing.assert_allclose(kv, KV)
    scaled = Simulator(ARM, build, MismatchConfig(actuator_gain_scale=0.8))
    kp, kv = _gains(scaled.model, scaled.info)
    np.testing.assert_allclose(kp, 0.8 * np.array(KP))
    np.testing.assert_allclose(kv, 0.8 * np.array(KV))


@pytest.mark.parametrize("kp, kv", [((250.0,), (12.0,)), (250.0, 12.0), ([250.0], [12])])
def test_one_value_is_broadcast_to_all_joints(kp, kv):
    options = BuildOptions(control_mode="position", position_kp=kp, position_kv=kv)
    assert options.position_kp == (250.0,) and options.position_kv == (12.0,)
    model, info = build_mujoco_model(ARM, options)
    gains = _gains(model, info)
    np.testing.assert_allclose(gains[0], np.full(7, 250.0))
    np.testing.assert_allclose(gains[1], np.full(7, 12.0))


def test_defaults_are_one_value():
    options = BuildOptions()
    assert options.position_kp == (100.0,) and options.position_kv == (5.0,)
    model, info = build_mujoco_model(ARM, BuildOptions(control_mode="position"))
    gains = _gains(model, info)
    np.testing.assert_allclose(gains[0], 100.0)
    np.testing.assert_allclose(gains[1], 5.0)


@pytest.mark.parametrize("name", ["position_kp", "position_kv"])
def test_wrong_count_is_refused(name):
    with pytest.raises(ValueError, match=rf"{name} has 3 values for 7 joints"):
        build_mujoco_model(ARM, BuildOptions(control_mode="position",
                                             **{name: (1.0, 2.0, 3.0)}))
    # the gains of an unused control mode are not checked against the joints
    build_mujoco_model(ARM, BuildOptions(control_mode="effort", **{name: (1.0, 2.0, 3.0)}))


@pytest.mark.parametrize("name", ["position_kp", "position_kv"])
@pytest.mark.parametrize("values, match", [((), "one value or one per joint"),
                                           ((1.0, -2.0), "finite and >= 0"),
                                           ((float("nan"),), "finite and >= 0"),
                                           ((float("inf"),) * 7, "finite and >= 0")])
def test_bad_gains_are_refused(name, values, match):
    options = BuildOptions(control_mode="position", **{name: values})
    with pytest.raises(ValueError, match=f"{name} must"):
        options.validate()
    with pytest.raises(ValueError, match=match):
        build_mujoco_model(ARM, options)
