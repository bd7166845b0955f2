"""Checkpoint format: round trips, atomic writes, refusal of corrupt files."""

import hashlib
import json
import os
import stat
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mbrl_ros.core.checkpoint import (MAGIC, META_HEADER, META_VERSION, TEMP_PREFIX,
                                      CheckpointError, file_sha256, load_checkpoint,
                                      remove_partial_writes, save_checkpoint)
from mbrl_ros.core.ensemble import EnsembleConfig, ProbabilisticEnsemble
from mbrl_ros.core.model_loading import load_model
from mbrl_ros.core.types import TransitionBatch

CONFIG = EnsembleConfig(hidden_sizes=(16, 16), max_epochs=3, num_elites=2, angle_wrap=(1,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _safetensors_layout(data):
    """(header length, safetensors header dict) of a checkpoint's bytes."""
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    return length, json.loads(bytes(data[8:8 + length]))


def _rewrite_table(change):
    """Mutation that edits the safetensors header (and re-encodes it with its new length)."""
    def mutate(data):
        length, table = _safetensors_layout(data)
        change(table)
        encoded = json.dumps(table).encode()
        encoded += b" " * (-len(encoded) % 8)
        return bytearray(struct.pack("<Q", len(encoded)) + encoded) + data[8 + length:]
    return mutate


def _flip_tensor_data(data):
    length, table = _safetensors_layout(data)
    start, end = table["net.weights.0"]["data_offsets"]
    data[8 + length + (start + end) // 2] ^= 0x01
    return data


def _flip_header_json(data):
    length, _ = _safetensors_layout(data)
    position = bytes(data).index(b'\\"num_transitions\\": ') + len(b'\\"num_transitions\\": ')
    assert chr(data[position]).isdigit()
    data[position] = ord("9") if data[position] != ord("9") else ord("8")
    return data


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:len(d) - 7], "truncated"),
    (lambda d: d[:20], "truncated"),
    (lambda d: d[:10], "truncated"),
    (lambda d: d[:5], "too short"),
    (lambda d: d + b"extra", "trailing"),
    (_flip(-3), "hash mismatch"),
    (_flip_tensor_data, "tensor data hash mismatch"),
    (_flip_header_json, "header hash mismatch"),
    (_flip(0), "not an mbrl_ros checkpoint|corrupt|truncated"),
    (_flip(30), "corrupt header|corrupt tensor table|truncated|hash mismatch|not an mbrl_ros"),
    (_rewrite_table(lambda t: t["net.weights.0"].update(dtype="F64")),
     "corrupt tensor table|truncated"),
    (_rewrite_table(lambda t: t.pop("__metadata__")), "not an mbrl_ros checkpoint"),
    (lambda d: bytearray(b"PK\x03\x04 a zip file, or a pickle, not a checkpoint"),
     "not an mbrl_ros checkpoint"),
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
    _rewrite(path, _rewrite_table(lambda t: t["__metadata__"].update({META_VERSION: "99"})))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_checkpoint_is_a_plain_safetensors_file(trained, saved):
    """Any safetensors reader lists and loads the weights; the header is in __metadata__."""
    model = trained[0]
    path, _ = saved
    tensors, _ = model.checkpoint_payload()
    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(tensors)
        for name, tensor in tensors.items():
            assert torch.equal(f.get_tensor(name), tensor.detach().cpu()), name
        metadata = f.metadata()
    header = json.loads(metadata[META_HEADER])
    assert metadata[META_VERSION] == "2" and header["model_class"] == "ProbabilisticEnsemble"
    assert header["metadata"] == {"robot": "arm", "version": 3}


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = str(tmp_path / "foreign.mbrl")
    save_file({"w": torch.zeros(3)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not an mbrl_ros checkpoint"):
        load_checkpoint(path)


def test_shared_memory_tensors_are_saved(tmp_path):
    base = torch.arange(6.0)
    path = str(tmp_path / "views.mbrl")
    save_checkpoint(path, "Test", {"all": base, "head": base[:2], "grid": base.view(2, 3)}, {})
    loaded = load_checkpoint(path).tensors
    assert torch.equal(loaded["head"], base[:2]) and torch.equal(loaded["grid"], base.view(2, 3))


def _legacy_bytes(model_class, tensors, header):
    """A checkpoint in the format version 1 layout (MAGIC, header length, JSON, raw data)."""
    entries, blobs, offset = {}, [], 0
    names = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64",
             torch.bool: "bool"}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        blob = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        entries[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                         "offset": offset, "nbytes": len(blob)}
        blobs.append(blob)
        offset += len(blob)
    data = b"".join(blobs)
    full = dict(header, format_version=1, model_class=model_class, tensors=entries,
                data_nbytes=len(data), data_sha256=hashlib.sha256(data).hexdigest())
    encoded = json.dumps(full, sort_keys=True).encode()
    return MAGIC + struct.pack("<Q", len(encoded)) + encoded + data


def test_legacy_checkpoints_are_still_read(trained, tmp_path):
    model, state, action = trained
    tensors, header = model.checkpoint_payload()
    path = tmp_path / "model_000001.mbrl"
    path.write_bytes(_legacy_bytes("ProbabilisticEnsemble", tensors, header))
    checkpoint = load_checkpoint(str(path), expected_sha256=file_sha256(str(path)))
    assert checkpoint.legacy and checkpoint.header["format_version"] == 1
    loaded = load_model(str(path))
    assert torch.equal(loaded.predict(state, action)[0], model.predict(state, action)[0])
    # re-saving gives a current (safetensors) file
    resaved = str(tmp_path / "model_000002.mbrl")
    loaded.save(resaved)
    assert not load_checkpoint(resaved).legacy
    _rewrite(str(path), _flip(-3))
    with pytest.raises(CheckpointError, match="tensor data hash mismatch"):
        load_checkpoint(str(path))
    path.write_bytes(b"MBRLCKPT not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(path))


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


# ------------------------------------------------------------------ mutation-testing edges
# (bench/mutation.py; docs/safety_gate.md, "Mutation testing")

def test_tensor_names_sorting_before_the_metadata_key_still_count(tmp_path):
    """The data section's end comes from every tensor but ``__metadata__``: names that sort
    before it (capitals, digits) must count too, or a valid file reads as having trailing
    bytes."""
    tensors = {"W": torch.arange(4.0), "0.bias": torch.ones(2, dtype=torch.float64)}
    path = str(tmp_path / "upper.mbrl")
    save_checkpoint(path, "Test", tensors, {})
    loaded = load_checkpoint(path).tensors
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name


def test_legacy_checkpoints_with_trailing_or_missing_bytes_are_refused(tmp_path):
    raw = _legacy_bytes("Test", {"w": torch.arange(100.0)}, {})
    path = tmp_path / "legacy.mbrl"
    path.write_bytes(raw)
    assert load_checkpoint(str(path)).legacy
    path.write_bytes(raw + b"extra")
    with pytest.raises(CheckpointError, match="trailing bytes: data section 405 bytes, "
                                              "header says 400"):
        load_checkpoint(str(path))
    path.write_bytes(raw[:-8])
    with pytest.raises(CheckpointError, match="data section 392 bytes, header says 400"):
        load_checkpoint(str(path))
