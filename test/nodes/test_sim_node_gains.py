"""Simulator node: position_kp / position_kv are double arrays, one value or one per joint."""

from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter

from mbrl_ros.nodes.sim_node import SimNode
from mbrl_ros.robots.defaults import robot_defaults
from mbrl_ros.robots.robot_model import RobotModel

ARM = str(Path(__file__).resolve().parents[2] / "urdf" / "arm7.urdf")
KP = [400.0, 350.0, 300.0, 200.0, 100.0, 50.0, 20.0]
KV = [40.0, 35.0, 30.0, 20.0, 10.0, 5.0, 2.0]


def _node(ros_context, **params):
    overrides = [Parameter("urdf", value=ARM), Parameter("control_mode", value="position"),
                 Parameter("real_time_factor", value=0.0)]
    overrides += [Parameter(name, value=value) for name, value in params.items()]
    return SimNode(context=ros_context, parameter_overrides=overrides)


def _gains(node):
    model = node.sim.model
    ids = [model.actuator(name).id for name in node.sim.info.actuator_names]
    return model.actuator_gainprm[ids, 0], -model.actuator_biasprm[ids, 2]


@pytest.mark.parametrize("kp, kv, expected_kp, expected_kv", [
    (None, None, None, None),  # left out: derived from the URDF
    (KP, KV, KP, KV),  # one per joint
    ([250.0], [12], [250.0] * 7, [12.0] * 7),  # one value; integers accepted
    (250.0, 12.0, [250.0] * 7, [12.0] * 7),  # a scalar (e.g. -p position_kp:=250.0) still works
])
def test_position_gains_per_joint(ros_context, kp, kv, expected_kp, expected_kv):
    params = {} if kp is None else {"position_kp": kp, "position_kv": kv}
    node = _node(ros_context, **params)
    try:
        if kp is None:  # the rule robot-config writes, at the derived home
            home, derived = robot_defaults(RobotModel.from_urdf(ARM))
            expected_kp, expected_kv = derived.kp, derived.kd
            np.testing.assert_allclose(node.sim.model.key("home").qpos, home)
        else:
            assert node.config.position_kp == tuple(np.atleast_1d(kp).astype(float))
        gains = _gains(node)
        np.testing.assert_allclose(gains[0], expected_kp)
        np.testing.assert_allclose(gains[1], expected_kv)
    finally:
        node.destroy_node()


def test_wrong_gain_count_is_refused(ros_context):
    with pytest.raises(ValueError, match="position_kp has 2 values for 7 joints"):
        _node(ros_context, position_kp=[1.0, 2.0])
    with pytest.raises(ValueError, match="position_kv must be finite and >= 0"):
        _node(ros_context, position_kv=[-1.0])


def test_quadruped_config_file_loads(ros_context):
    repo = Path(__file__).resolve().parents[2]
    node = SimNode(context=ros_context, cli_args=[
        "--ros-args", "--params-file", str(repo / "config" / "quadruped12.yaml"),
        "-p", f"urdf:={repo / 'urdf' / 'quadruped12.urdf'}"])
    try:
        assert node.config.control_mode == "position" and node.config.push_rate_hz == 0.5
        assert node.config.position_kp == (100.0,) and node.config.position_kv == (5.0,)
        gains = _gains(node)
        np.testing.assert_allclose(gains[0], np.full(12, 100.0))
        np.testing.assert_allclose(gains[1], np.full(12, 5.0))
    finally:
        node.destroy_node()
