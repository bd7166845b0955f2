"""Task costs, exploration and planner seeds of the graph's tasks (reach, stand), ROS-free."""
