"""Versioned checkpoints: next version, newest valid, corrupt files skipped."""

from mbrl_ros.core.checkpoint import CheckpointError
from mbrl_ros.core.model_registry import ModelRegistry


def _loader(path):
    text = path.read_text()
    if text == "corrupt":
        raise CheckpointError(f"{path} is corrupt")
    return text


def test_versions_and_newest_valid(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    assert registry.next_version() == 1
    assert registry.newest_valid(_loader) is None
    registry.path_for(1).write_text("one")
    registry.path_for(2).write_text("two")
    registry.path_for(3).write_text("corrupt")
    (registry.folder / "model_000004.mbrl.tmp").write_text("partial write")
    assert [m.version for m in registry.versions()] == [1, 2, 3]
    assert registry.next_version() == 4
    version, path, loaded = registry.newest_valid(_loader)
    assert (version, loaded) == (2, "two")
    assert path == registry.path_for(2)
