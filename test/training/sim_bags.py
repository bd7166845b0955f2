"""Small robot bags from the simulated 7-DoF arm with model mismatch, for the training tests.

The simulated robot differs from its URDF (friction x2, damping x1.5, 0.5 kg payload, 95 %
actuator gain), like config/arm7.yaml's sim. A computed-torque controller tracks random smooth
joint targets with low-passed noise; torques change every 20 ms (the model period). Bags hold
JointState at 100 Hz with the joints in another order than the URDF plus an extra joint,
Float64MultiArray effort commands, two unrelated topics and a 0.4 s hole in the recording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import mujoco
import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer

from mbrl_ros.data.message_types import build_typestore
from mbrl_ros.robots.mismatch import MismatchConfig
from mbrl_ros.robots.simulator import Simulator

REPO = Path(__file__).resolve().parents[2]
URDF = str(REPO / "urdf" / "arm7.urdf")
MISMATCH = MismatchConfig(friction_scale=2.0, damping_scale=1.5, payload_mass=0.5,
                          actuator_gain_scale=0.95)
STATE_PERIOD_NS = 10_000_000
COMMAND_EVERY = 2  # state periods per command (50 Hz)
T0_NS = 1_700_000_000_000_000_000
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
STATE_TOPIC, COMMAND_TOPIC = "/joint_states", "/effort_controller/commands"
NATURAL_FREQUENCY = 6.0  # rad/s of the tracking controller
NOISE_ACCELERATION = 40.0  # rad/s^2 std of the exploration noise before low-pass
TARGET_AMPLITUDE = (0.15, 0.4)  # rad, per sinusoid


def simulate(seed: int, duration_s: float) -> dict:
    """Roll the mismatched arm out: ``q, qd [num_states, 7]``, ``command [num_states, 7]``
    (the torque applied during each state period) at 100 Hz, joints in URDF order."""
    sim = Simulator(URDF, mismatch=MISMATCH)
    rng = np.random.default_rng(seed)
    joints = len(sim.joint_names)
    limits = np.asarray(sim.info.effort_limits)
    home, _, _ = sim.joint_state()
    freqs = rng.uniform(0.1, 0.5, (3, joints))
    phases = rng.uniform(0, 2 * np.pi, (3, joints))
    amplitudes = rng.uniform(*TARGET_AMPLITUDE, (3, joints))
    mass = np.zeros((sim.model.nv, sim.model.nv))
    dofs = np.array([sim.model.joint(j).dofadr[0] for j in sim.joint_names])
    noise = np.zeros(joints)
    num_states = int(round(duration_s * 1e9 / STATE_PERIOD_NS))
    q_log, qd_log, command_log = [], [], []
    torque = np.zeros(joints)
    for k in range(num_states):
        q, qd, _ = sim.joint_state()
        if k % COMMAND_EVERY == 0:
            t = k * STATE_PERIOD_NS * 1e-9
            target = home + (amplitudes * np.sin(2 * np.pi * freqs * t + phases)).sum(0)
            noise = 0.9 * noise + 0.1 * rng.normal(0.0, NOISE_ACCELERATION, joints)
            mujoco.mj_fullM(sim.model, sim.data, mass)
            acceleration = (NATURAL_FREQUENCY ** 2 * (target - q) - 2 * NATURAL_FREQUENCY * qd
                            + noise)
            torque = np.clip(mass[np.ix_(dofs, dofs)] @ acceleration
                             + sim.data.qfrc_bias[dofs], -limits, limits)
            sim.set_command(torque)
        q_log.append(q)
        qd_log.append(qd)
        command_log.append(torque.copy())
        sim.step(1)
    return {"q": np.array(q_log), "qd": np.array(qd_log), "command": np.array(command_log),
            "joints": tuple(sim.joint_names)}


def _time(ts, t_ns):
    time_type = ts.types["builtin_interfaces/msg/Time"]
    return time_type(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))


def write_sim_bag(path: Path, storage: str = "mcap", seed: int = 0, duration_s: float = 20.0,
                  hole_s: Optional[tuple] = (6.0, 6.4),
                  state_joints: Optional[Sequence[str]] = None) -> Path:
    """Write a rosbag2 directory bag of a simulated run; returns ``path``.

    Args:
        hole_s: ``(start, end)`` seconds with no messages at all (None: no hole).
        state_joints: joints published on the state topic (default: the URDF's reversed plus
            an extra ``gripper_joint``); leave one out to make a bag with a missing joint.
    """
    run = simulate(seed, duration_s)
    joints = run["joints"]
    names = ([*reversed(joints), "gripper_joint"] if state_joints is None
             else list(state_joints))
    ts = build_typestore()
    types = ts.types
    header, joint_state = types["std_msgs/msg/Header"], types["sensor_msgs/msg/JointState"]
    array = types["std_msgs/msg/Float64MultiArray"]
    layout = types["std_msgs/msg/MultiArrayLayout"]
    string = types["std_msgs/msg/String"]
    writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
    with writer:
        state_c = writer.add_connection(STATE_TOPIC, "sensor_msgs/msg/JointState", typestore=ts)
        command_c = writer.add_connection(COMMAND_TOPIC, "std_msgs/msg/Float64MultiArray",
                                          typestore=ts)
        log_c = writer.add_connection("/rosout_text", "std_msgs/msg/String", typestore=ts)
        other_c = writer.add_connection("/gripper/joint_states", "sensor_msgs/msg/JointState",
                                        typestore=ts)
        for k in range(len(run["q"])):
            t_s = k * STATE_PERIOD_NS * 1e-9
            if hole_s is not None and hole_s[0] <= t_s < hole_s[1]:
                continue
            stamp = T0_NS + k * STATE_PERIOD_NS
            by_name = {j: (run["q"][k, i], run["qd"][k, i]) for i, j in enumerate(joints)}
            by_name["gripper_joint"] = (0.01, 0.0)
            values = np.array([by_name[n] for n in names], dtype=float).reshape(-1, 2)
            msg = joint_state(header=header(stamp=_time(ts, stamp), frame_id=""), name=names,
                              position=np.ascontiguousarray(values[:, 0]),
                              velocity=np.ascontiguousarray(values[:, 1]),
                              effort=np.zeros(0))
            writer.write(state_c, stamp + 500_000, ts.serialize_cdr(msg, msg.__msgtype__))
            if k % COMMAND_EVERY == 0:
                command = array(layout=layout(dim=[], data_offset=0),
                                data=run["command"][k].copy())
                writer.write(command_c, stamp + 1_000_000,
                             ts.serialize_cdr(command, command.__msgtype__))
            if k % 100 == 0:
                text = string(data=f"t={t_s:.1f}")
                writer.write(log_c, stamp + 2_000_000, ts.serialize_cdr(text, text.__msgtype__))
                gripper = joint_state(header=header(stamp=_time(ts, stamp), frame_id=""),
                                      name=["finger"], position=np.zeros(1),
                                      velocity=np.zeros(1), effort=np.zeros(0))
                writer.write(other_c, stamp + 2_000_000,
                             ts.serialize_cdr(gripper, gripper.__msgtype__))
    return path


def write_config(path: Path, **trainer_parameters) -> Path:
    """A parameters file like config/arm7.yaml with a tiny, fast ensemble; keyword arguments
    replace trainer parameters (nested dicts for ``ensemble``/``data``/``alignment``)."""
    parameters = {
        "model_period_s": 0.02, "nominal_substeps": 4, "torch_threads": 1,
        "model_kind": "residual", "min_transitions": 200,
        "ensemble": {"num_members": 3, "num_elites": 2, "hidden_sizes": [32, 32],
                     "max_epochs": 12, "patience": 12, "batch_size": 128},
        "data": {"state_topic": STATE_TOPIC, "command_topic": COMMAND_TOPIC},
        "alignment": {"control_rate_hz": 50.0, "command_latency_s": 0.005},
    }
    for key, value in trainer_parameters.items():
        if isinstance(value, dict):
            parameters[key] = {**parameters.get(key, {}), **value}
        else:
            parameters[key] = value
    document = {"/**/sim": {"ros__parameters": {"control_period": 0.01}},
                "/**/trainer": {"ros__parameters": parameters}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
