"""Test-wide settings: keep DDS on this machine and give every run its own domain."""

import os

# DDS traffic must stay on this machine, and parallel runs must not see each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402


@pytest.fixture
def ros_context():
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tests: faster and steadier on a small shared
    CPU (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
