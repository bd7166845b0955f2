"""The main demo: the arm in simulation explores, learns, then reaches random goals."""
