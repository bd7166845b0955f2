"""Two robots side by side on one ROS domain, each graph in its own namespace.

Every topic of the graph is relative, so ``arm_sim.launch.yaml namespace:=robot_a`` puts the
whole graph (sim, logger, trainer, planner, gate) under ``/robot_a``. Two such launches run
here at once (package runner, real processes, the shipped launch and parameters files) and
each graph must talk only to itself: every endpoint of ``/robot_a/...`` belongs to a node of
``/robot_a`` and no topic or service lies outside the two namespaces but the global ones, so a
node that used an absolute name (``/joint_states``) fails the test. Each robot also runs on its
own simulated clock (``robot_b`` at half speed): a node that followed the other robot's clock
would stamp its messages seconds off its own robot's joint states.

Without ROS: the launch files give every node the namespace, and bag topics are matched with
relative names resolved in the namespace (trainer node, ``mbrl-ros train --namespace``).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from collections import defaultdict

import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.data.bag_reader import read_robot_streams
from mbrl_ros.data.dataset_config import RobotStreamsConfig, resolve_topic_name
from mbrl_ros.launch_runner.executor import resolve_launch_file
from mbrl_ros.msg import GateStatus, PlannedCommand, PlanStatus
from mbrl_ros.nodes.qos import PLANNED_COMMAND_QOS
from mbrl_ros.training.config_file import load_training_setup
from ros_helpers import spin_until

REPO = pathlib.Path(__file__).resolve().parents[2]
URDF = str(REPO / "urdf" / "arm7.urdf")
CONFIG = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
CONTROLLER = CONFIG["/**/sim"]["ros__parameters"]["controller_name"]
NAMESPACES = {"robot_a": "1.0", "robot_b": "0.5"}
"""Namespace -> the sim's real-time factor: the two simulated clocks drift apart."""
NODES = ("sim", "logger", "trainer", "planner", "safety_gate", "lifecycle_manager")
DOMAIN_OFFSET = 50
"""How far this module's ROS domain is from the test run's (see :func:`own_domain_id`)."""
GLOBAL_TOPICS = {"/rosout", "/parameter_events", "/diagnostics", "/tf", "/tf_static"}
"""Topics that stay global with namespaced graphs (no /clock: each sim has its own)."""
ENDPOINTS = {  # relative topic -> (publishing nodes, subscribing nodes) of one graph
    "joint_states": ({"sim"}, {"planner", "safety_gate", "logger"}),
    f"{CONTROLLER}/commands": ({"safety_gate"}, {"sim", "logger"}),
    "mbrl/planned_command": ({"planner"}, {"safety_gate", "logger"}),
    "mbrl/gate/status": ({"safety_gate"}, {"logger"}),
    "mbrl/plan/status": ({"planner"}, {"logger"}),
    "mbrl/model_update": ({"trainer"}, {"planner"}),
    "mbrl/goal": (set(), {"planner", "logger"}),
    "clock": ({"sim"}, {"logger", "trainer", "planner", "safety_gate"}),
}
PROBE = "namespace_probe"
STARTUP_TIMEOUT_S = 90.0
CLOCK_TOLERANCE_S = 0.5
"""Largest distance between a node's clock (its message stamps) and its own sim's time."""
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- without ROS
def _inline_parameters(process) -> dict:
    """The node's parameters given in the launch file (keyed by its full name)."""
    found = {}
    for index, argument in enumerate(process.command):
        if argument == "--params-file":
            document = yaml.safe_load(pathlib.Path(process.command[index + 1]).read_text())
            found.update(document.get(process.node_name, {}).get("ros__parameters", {}))
    return found


@pytest.mark.parametrize("launch_file, arguments, simulated", [
    ("arm_sim.launch.yaml", {}, True),
    ("quadruped_sim.launch.yaml", {}, True),
    ("robot.launch.yaml", {"urdf": URDF}, False),
])
@pytest.mark.parametrize("namespace", ["", "robot_a"])
def test_launch_files_put_every_node_in_the_namespace(launch_file, arguments, simulated,
                                                      namespace, tmp_path):
    processes = resolve_launch_file(str(REPO / "launch" / launch_file),
                                    dict(arguments, namespace=namespace), str(tmp_path))
    expected = f"/{namespace}" if namespace else "/"
    names = {p.node_name for p in processes}
    prefix = expected.rstrip("/")
    assert names == {f"{prefix}/{n}" for n in NODES if simulated or n != "sim"}
    for process in processes:
        arguments_ = process.command[process.command.index("--ros-args"):]
        assert f"__ns:={expected}" in arguments_, process.command
        # each simulated robot has its own clock: <namespace>/clock
        assert ("/clock:=clock" in arguments_) == simulated, process.command
        assert not any(a.startswith("/") and ":=" in a and not a.startswith("/clock:=")
                       for a in arguments_), f"an absolute remapping: {process.command}"
        parameters = _inline_parameters(process)
        for name in ("command_topic", "data.command_topic"):
            if name in parameters:
                assert parameters[name] == f"{CONTROLLER}/commands"
        if "data_dir" in parameters:  # each robot records and trains in folders of its own
            data_dir = os.path.normpath(parameters["data_dir"])
            assert data_dir.endswith(os.path.join(namespace, "data") if namespace else "/data")
            assert (namespace in pathlib.Path(data_dir).parts) == bool(namespace)
    (gate,) = [p for p in processes if p.node_name.endswith("/safety_gate")]
    assert f"effort_controller/commands:={CONTROLLER}/commands" in gate.command


def test_relative_topic_names_resolve_in_the_namespace():
    assert resolve_topic_name("joint_states") == "/joint_states"
    assert resolve_topic_name("joint_states", "robot_a") == "/robot_a/joint_states"
    assert resolve_topic_name("mbrl/goal", "/fleet/robot_a/") == "/fleet/robot_a/mbrl/goal"
    assert resolve_topic_name("/joint_states", "robot_a") == "/joint_states"
    assert resolve_topic_name("", "robot_a") == ""
    with pytest.raises(ValueError, match="private"):
        resolve_topic_name("~/joint_states")
    streams = RobotStreamsConfig(joints=("j",), odom_topic="odom", goal_topic="/goal")
    resolved = streams.resolved(lambda t: resolve_topic_name(t, "robot_a"))
    assert (resolved.state_topic, resolved.command_topic, resolved.odom_topic,
            resolved.goal_topic, resolved.imu_topic) == (
        "/robot_a/joint_states", "/robot_a/command", "/robot_a/odom", "/goal", "")


def test_offline_training_matches_relative_names_in_the_root_or_given_namespace(
        tmp_path, monkeypatch, capsys):
    from training import sim_bags

    from mbrl_ros.cli import main
    config = str(sim_bags.write_config(tmp_path / "relative.yaml", data={
        "state_topic": "joint_states", "command_topic": "effort_controller/commands"}))

    def train(bag, *extra) -> int:
        return main(["train", "--bag", str(bag), "--config", config, "--urdf", URDF,
                     "--out", str(tmp_path / "models"), "--no-progress", *extra])

    # a bag recorded without a namespace (absolute /joint_states): relative names match it
    plain = sim_bags.write_sim_bag(tmp_path / "plain", duration_s=8.0, hole_s=None)
    assert train(plain) == 0, capsys.readouterr().err
    # a bag of robot_a: --namespace robot_a, and only with it
    monkeypatch.setattr(sim_bags, "STATE_TOPIC", "/robot_a/joint_states")
    monkeypatch.setattr(sim_bags, "COMMAND_TOPIC", "/robot_a/effort_controller/commands")
    namespaced = sim_bags.write_sim_bag(tmp_path / "robot_a", duration_s=8.0, hole_s=None)
    capsys.readouterr()
    assert train(namespaced) == 2
    assert "'/joint_states' not in the bag" in capsys.readouterr().err
    assert train(namespaced, "--namespace", "robot_a") == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------ with ROS
def _params_file(work: pathlib.Path) -> pathlib.Path:
    """config/arm7.yaml with short bag splits, and trainers that read but never train (two
    graphs share this machine's cores)."""
    config = yaml.safe_load((REPO / "config" / "arm7.yaml").read_text())
    config["/**/logger"]["ros__parameters"]["split_duration_s"] = 1.0
    trainer = config["/**/trainer"]["ros__parameters"]
    trainer.update(retrain_period_s=0.5, min_transitions=500_000)
    path = work / "arm7_namespaces.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Probe:
    """Watches both graphs from the root namespace."""

    def __init__(self, context) -> None:
        import rclpy
        self.node = rclpy.create_node(PROBE, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.commands = defaultdict(int)
        self.planned = defaultdict(int)
        self.state_stamp, self.gate_stamp, self.plan_stamp = {}, {}, {}
        self.diagnostics = {}
        for ns in NAMESPACES:
            self._subscribe(Float64MultiArray, f"/{ns}/{CONTROLLER}/commands", 10,
                            lambda m, ns=ns: self.commands.__setitem__(ns, self.commands[ns] + 1))
            self._subscribe(PlannedCommand, f"/{ns}/mbrl/planned_command", PLANNED_COMMAND_QOS,
                            lambda m, ns=ns: self.planned.__setitem__(ns, self.planned[ns] + 1))
            self._subscribe(JointState, f"/{ns}/joint_states", 10,
                            lambda m, ns=ns: self.state_stamp.__setitem__(ns, _seconds(m)))
            self._subscribe(GateStatus, f"/{ns}/mbrl/gate/status", LATCHED,
                            lambda m, ns=ns: self.gate_stamp.__setitem__(ns, _seconds(m)))
            self._subscribe(PlanStatus, f"/{ns}/mbrl/plan/status", 10,
                            lambda m, ns=ns: self.plan_stamp.__setitem__(ns, _seconds(m)))
        self._subscribe(DiagnosticArray, "/diagnostics", 100, self._on_diagnostics)

    def _subscribe(self, kind, topic, qos, callback) -> None:
        self.node.create_subscription(kind, topic, callback, qos)

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            self.diagnostics[status.name] = status

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.executor, predicate, timeout_s)

    def endpoints(self, topic: str):
        """``({publishing node}, {subscribing node})`` by full name, the probe left out."""
        def names(infos):
            return {f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in infos
                    if i.node_name != PROBE}
        return (names(self.node.get_publishers_info_by_topic(topic)),
                names(self.node.get_subscriptions_info_by_topic(topic)))


def _seconds(message) -> float:
    return message.header.stamp.sec + 1e-9 * message.header.stamp.nanosec


def _expected_endpoints():
    return {f"/{ns}/{topic}": ({f"/{ns}/{n}" for n in pubs}, {f"/{ns}/{n}" for n in subs})
            for ns in NAMESPACES for topic, (pubs, subs) in ENDPOINTS.items()}


def _stop(runner: subprocess.Popen, timeout_s: float = 60.0) -> str:
    if runner.poll() is None:
        runner.send_signal(signal.SIGINT)
    try:
        output, _ = runner.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        runner.kill()
        output, _ = runner.communicate()
    return output


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Two arm graphs from arm_sim.launch.yaml, in /robot_a and /robot_b, and a probe."""
    import rclpy
    from rclpy.context import Context

    work = tmp_path_factory.mktemp("namespaces")
    params = _params_file(work)
    # a domain of their own: a node an earlier test killed (SIGKILL) stays discoverable on the
    # run's domain until its DDS lease ends, and would count as a stray outside the namespaces
    domain = own_domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    runners = {ns: subprocess.Popen(
        [sys.executable, "-m", "mbrl_ros.cli", "launch", "mbrl_ros", "arm_sim.launch.yaml",
         f"namespace:={ns}", f"params_file:={params}", f"real_time_factor:={rtf}",
         f"data_dir:={work / ns / 'data'}", f"model_dir:={work / ns / 'models'}"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for ns, rtf in NAMESPACES.items()}
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    probe = Probe(context)
    state = {"probe": probe, "runners": runners, "work": work, "outputs": {}}
    try:
        yield state
    finally:
        for ns, runner in runners.items():
            state["outputs"].setdefault(ns, _stop(runner))
        probe.executor.shutdown()
        probe.node.destroy_node()
        rclpy.shutdown(context=context)


def own_domain_id() -> int:
    """A ROS domain in 1..100 other than the test run's (``ROS_DOMAIN_ID``)."""
    return (int(os.environ["ROS_DOMAIN_ID"]) + DOMAIN_OFFSET - 1) % 100 + 1


def _stray_topics(probe: "Probe") -> set:
    """Topics neither global nor in one of the two namespaces (an absolute name in a node)."""
    inside = tuple(f"/{ns}/" for ns in NAMESPACES)
    return {name for name, _ in probe.node.get_topic_names_and_types()
            if not name.startswith(inside) and name not in GLOBAL_TOPICS}


def _complete(probe: "Probe") -> bool:
    return all(probe.endpoints(topic) == ends for topic, ends in _expected_endpoints().items())


def test_no_topic_or_service_outside_the_namespaces(graphs):
    probe = graphs["probe"]
    # until the graphs are up, or a node shows up on a topic outside the namespaces
    assert probe.spin_until(lambda: _stray_topics(probe) or _complete(probe),
                            STARTUP_TIMEOUT_S), "the graphs did not come up"
    assert _stray_topics(probe) == set()
    topics = {name for name, _ in probe.node.get_topic_names_and_types()}
    assert "/joint_states" not in topics and "/clock" not in topics
    expected = {f"/{ns}/{service}" for ns in NAMESPACES for service in (
        "sim/reset", "safety_gate/estop", "safety_gate/reset", "trainer/reset",
        "planner/set_parameters", "logger/get_parameters")}

    def services() -> set:
        return {name for name, _ in probe.node.get_service_names_and_types()}

    assert probe.spin_until(lambda: expected <= services(), STARTUP_TIMEOUT_S), services()
    inside = tuple(f"/{ns}/" for ns in NAMESPACES) + (f"/{PROBE}/",)
    assert {s for s in services() if not s.startswith(inside)} == set()


def test_each_namespace_has_its_own_complete_graph(graphs):
    probe, expected = graphs["probe"], _expected_endpoints()
    assert probe.spin_until(lambda: _complete(probe), STARTUP_TIMEOUT_S), {
        topic: (probe.endpoints(topic), ends) for topic, ends in expected.items()
        if probe.endpoints(topic) != ends}
    nodes = {(ns.rstrip("/") + "/" + name) for name, ns
             in probe.node.get_node_names_and_namespaces() if name != PROBE}
    assert nodes == {f"/{ns}/{n}" for ns in NAMESPACES for n in NODES}
    assert _stray_topics(probe) == set()
    for runner in graphs["runners"].values():
        assert runner.poll() is None, "a graph stopped early"


def test_each_gate_commands_its_own_sim_on_its_own_clock(graphs):
    probe = graphs["probe"]
    start = dict(probe.commands)
    assert probe.spin_until(lambda: all(
        probe.commands[ns] - start.get(ns, 0) >= 20 and probe.planned[ns] >= 10
        and ns in probe.gate_stamp and ns in probe.plan_stamp for ns in NAMESPACES),
        STARTUP_TIMEOUT_S), (dict(probe.commands), dict(probe.planned))
    for ns in NAMESPACES:  # the controller topic's only publisher is the robot's own gate
        assert probe.endpoints(f"/{ns}/{CONTROLLER}/commands")[0] == {f"/{ns}/safety_gate"}
    # the clocks have drifted apart by now (robot_b runs at half speed); each gate and planner
    # stamps with its own robot's time
    probe.spin_until(lambda: False, 0.3)
    a, b = (probe.state_stamp[ns] for ns in NAMESPACES)
    assert abs(a - b) > 4 * CLOCK_TOLERANCE_S, (a, b)
    for ns in NAMESPACES:
        sim = probe.state_stamp[ns]
        assert abs(probe.gate_stamp[ns] - sim) < CLOCK_TOLERANCE_S, (ns, probe.gate_stamp, sim)
        assert abs(probe.plan_stamp[ns] - sim) < CLOCK_TOLERANCE_S, (ns, probe.plan_stamp, sim)


def test_diagnostics_name_full_node_names_and_trainers_read_their_own_bags(graphs):
    probe = graphs["probe"]
    expected = {f"/{ns}/{name}: {task}" for ns in NAMESPACES for name, task in (
        ("safety_gate", "safety gate"), ("planner", "planner"), ("trainer", "trainer"),
        ("logger", "logger"))}

    trainers = [f"/{ns}/trainer: trainer" for ns in NAMESPACES]

    def transitions(name: str) -> int:
        return int({v.key: v.value for v in probe.diagnostics[name].values}["transitions"])

    def failed() -> list:  # a round fails on a topic missing from the bags, for one
        return [probe.diagnostics[name].message for name in trainers
                if name in probe.diagnostics and probe.diagnostics[name].message.startswith(
                    "error")]

    def read() -> bool:  # each trainer ingested its own logger's namespaced splits
        return expected <= set(probe.diagnostics) and all(transitions(n) > 0 for n in trainers)

    assert probe.spin_until(lambda: failed() or read(), STARTUP_TIMEOUT_S), \
        sorted(probe.diagnostics)
    assert failed() == []


def test_shutdown_leaves_bags_with_only_namespaced_topics(graphs):
    """Last: stops both graphs."""
    for ns, runner in graphs["runners"].items():
        graphs["outputs"][ns] = _stop(runner)
        assert runner.returncode == 0, graphs["outputs"][ns][-3000:]
    setup = load_training_setup(REPO / "config" / "arm7.yaml", URDF)
    for ns in NAMESPACES:
        splits = sorted(p for p in (graphs["work"] / ns / "data").iterdir()
                        if (p / "metadata.yaml").is_file())
        assert splits, f"{ns}: no bag split"
        for split in splits:
            metadata = yaml.safe_load((split / "metadata.yaml").read_text())
            topics = [t["topic_metadata"]["name"] for t
                      in metadata["rosbag2_bagfile_information"]["topics_with_message_count"]]
            assert topics and all(t.startswith(f"/{ns}/") for t in topics), (split, topics)
        # the shipped trainer settings (relative names) read them in the robot's namespace
        streams = setup.streams.resolved(lambda t: resolve_topic_name(t, ns))
        recordings = read_robot_streams(splits, streams).recordings
        assert sum(len(r.state) for r in recordings) > 0
        assert sum(len(r.command) for r in recordings) > 0
