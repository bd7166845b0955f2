"""ROS-free robot data I/O: rosbag2 reading and writing, alignment into transitions."""
