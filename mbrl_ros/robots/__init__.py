"""Robot descriptions and simulation: URDF resolution, MuJoCo models, pinocchio models,
batched analytical dynamics and model mismatch (ROS-free)."""
