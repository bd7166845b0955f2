"""Benchmark results record their arguments without any machine's folders."""

import tempfile
from pathlib import Path

from bench.params import REPO, recorded_args


def test_paths_are_recorded_relative_to_the_repository_or_by_name():
    scratch = Path(tempfile.gettempdir()) / "run1" / "arm.png"  # outside the repository
    recorded = recorded_args({"out": str(REPO / "results" / "bench" / "x.json"),
                              "plot": str(scratch), "config": "config/arm7.yaml",
                              "seeds": [0, 1]})
    assert recorded == {"out": "results/bench/x.json", "plot": "arm.png",
                        "config": "config/arm7.yaml", "seeds": [0, 1]}
