"""pip / editable install of the Python package (colcon uses CMakeLists.txt; both read setup.cfg)."""

from setuptools import setup

setup()
