"""Checkpoint format: round trips, atomic writes, refusal of corrupt files."""

import json
import os
import stat
import struct

import numpy as np
import pytest
import torch

from mbrl_ros.core.checkpoint import (TEMP_PREFIX, CheckpointError, file_sha256, load_checkpoint,
                                      remove_partial_writes, save_checkpoint)
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.types import TransitionBatch

CONFIG = EnsembleConfig(hidden_sizes=(16, 16), max_epochs=3, num_elites=2, angle_wrap=(1,))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: faster and steadier on a small shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    state = rng.uniform(-1, 1, (120, 3))
    action = rng.uniform(-1, 1, (120, 2))
    batch = TransitionBatch(state, action, state + 0.1 * np.tanh(state + action.sum(1)[:, None]))
    model = ProbabilisticEnsemble(3, 2, CONFIG, seed=1)
    model.fit(batch, seed=0)
    return model, torch.as_tensor(state[:32]), torch.as_tensor(action[:32])


@pytest.fixture
def saved(tmp_path, trained):
    model = trained[0]
    path = str(tmp_path / "model.ckpt")
    sha = model.save(path, metadata={"robot": "arm", "version": 3})
    return path, sha


def test_save_load_gives_identical_predictions(trained, saved, tmp_path):
    model, state, action = trained
    path, sha = saved
    assert sha == file_sha256(path)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []
    for loaded in (ProbabilisticEnsemble.load(path, expected_sha256=sha), load_model(path)):
        assert isinstance(loaded, ProbabilisticEnsemble) and loaded.config == CONFIG
        for use_elites in (False, True):
            expected = model.predict(state, action, use_elites=use_elites)
            got = loaded.predict(state, action, use_elites=use_elites)
            assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
        assert torch.equal(loaded.elites, model.elites)
        assert loaded.num_transitions == 120 and loaded.metrics == model.metrics
    header = load_checkpoint(path).header
    assert header["metadata"] == {"robot": "arm", "version": 3}
    assert header["model_class"] == "ProbabilisticEnsemble" and header["state_dim"] == 3
    assert header["target_normalizer"]["std"] == model.target_normalizer.std.tolist()


def test_all_dtypes_round_trip(tmp_path):
    tensors = {"f32": torch.randn(2, 3), "f64": torch.randn(4, dtype=torch.float64),
               "i64": torch.arange(5), "b": torch.tensor([True, False]),
               "bf16": torch.randn(3).to(torch.bfloat16), "empty": torch.zeros(0, 4),
               "scalar": torch.tensor(3.5)}
    path = str(tmp_path / "t.ckpt")
    save_checkpoint(path, "Test", tensors, {"x": [1, 2]})
    loaded = load_checkpoint(path)
    assert loaded.header["x"] == [1, 2] and loaded.header["model_class"] == "Test"
    for name, tensor in tensors.items():
        assert loaded.tensors[name].dtype == tensor.dtype
        assert torch.equal(loaded.tensors[name], tensor), name
    with pytest.raises(CheckpointError, match="not a dynamics model"):
        load_model(path)


def _rewrite(path, mutate):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data = mutate(data)
    with open(path, "wb") as f:
        f.write(bytes(data))


def _flip(position):
    def mutate(data):
        data[position] ^= 0xFF
        return data
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:len(d) - 7], "truncated"),
    (lambda d: d[:20], "truncated"),
    (lambda d: d[:10], "bad magic or too short"),
    (lambda d: d + b"extra", "trailing"),
    (_flip(-3), "hash mismatch"),
    (_flip(0), "bad magic"),
    (_flip(30), "corrupt header|corrupt tensor table|truncated|hash mismatch|ensemble"),
])
def test_corrupt_files_are_refused(saved, mutate, message):
    path, _ = saved
    _rewrite(path, mutate)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_hash_mismatch_missing_file_and_bad_version(saved, tmp_path):
    path, sha = saved
    load_checkpoint(path, expected_sha256=sha.upper())
    with pytest.raises(CheckpointError, match="expected"):
        load_checkpoint(path, expected_sha256="0" * 64)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))

    def bump_version(data):
        (length,) = struct.unpack("<Q", bytes(data[8:16]))
        header = json.loads(bytes(data[16:16 + length]))
        header["format_version"] = 99
        encoded = json.dumps(header).encode()
        return data[:8] + struct.pack("<Q", len(encoded)) + encoded + data[16 + length:]
    _rewrite(path, bump_version)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_wrong_tensor_shapes_are_refused(trained, tmp_path):
    model = trained[0]
    tensors, header = model.checkpoint_payload()
    tensors["max_logvar"] = torch.zeros(1)
    path = str(tmp_path / "bad.ckpt")
    save_checkpoint(path, "ProbabilisticEnsemble", tensors, header)
    with pytest.raises(CheckpointError, match="valid ensemble"):
        load_model(path)


def test_checkpoints_are_readable_by_others_and_partial_writes_are_cleaned(tmp_path):
    path = tmp_path / "model_000001.mbrl"
    save_checkpoint(str(path), "x", {"w": torch.zeros(2)}, {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    (tmp_path / f"{TEMP_PREFIX}abc").write_bytes(b"half a checkpoint")
    assert remove_partial_writes(str(tmp_path)) == [f"{TEMP_PREFIX}abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_000001.mbrl"]
