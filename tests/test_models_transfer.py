import h5py
import keras
import numpy as np
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.config import load_config
from cnnlab.models import KINDS, kind_of, model_label
from cnnlab.models.factory import build_model
from cnnlab.models.transfer import CAFFE, network
from cnnlab.models.vgg16 import BACKBONE as VGG16


def layer_names(model) -> list[str]:
    """The names of `model`'s layers, nested models' layers included."""
    return [name for layer in model.layers
            for name in (layer_names(layer) if isinstance(layer, keras.Model) else [layer.name])]


def vgg_config(**overrides):
    return load_config("seed", {"model": "vgg16", "vgg16.weights": "none", **overrides})


def write_legacy_notop_weights(path, seed=0):
    """An .h5 in the layout of Keras's vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5, with random values."""
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in base.layers]
        handle.attrs["backend"], handle.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for layer in base.layers:
            group = handle.create_group(layer.name)
            values = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
            names = [f"{layer.name}_{kind}_1:0".encode() for kind in ("W", "b")][: len(values)]
            group.attrs["weight_names"] = names
            for name, value in zip(names, values):
                group.create_dataset(name, data=value)
            written[layer.name] = values
    return written


def test_preprocessing_inside_the_model_is_vgg16_preprocess_input():
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    layer = network.affine_preprocessing(CAFFE)
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(layer(images)), expected, atol=1e-4)
    assert not layer.trainable


def test_model_takes_raw_32px_images_and_upscales_inside():
    model = build_model(vgg_config(**{"vgg16.image_size": 64}), 10, (32, 32, 3))
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    assert model.get_layer("upscale").output.shape[1:3] == (64, 64)
    assert model.get_layer(network.TRUNK_NAME).output.shape[1:] == (2, 2, 512)
    assert [layer.name for layer in model.layers][-3:] == ["head_dense1", "head_dropout1", "probabilities"]


def test_head_pooling_and_units_come_from_config():
    model = build_model(vgg_config(**{"vgg16.head_pooling": "avg", "vgg16.head_units": [64, 32],
                                      "vgg16.head_dropout": 0.0}), 10, (32, 32, 3))
    names = [layer.name for layer in model.layers]
    assert "head_pool" in names and "head_dense2" in names and not any("dropout" in name for name in names)


def test_freezing_leaves_only_the_chosen_blocks_trainable():
    model = build_model(vgg_config(), 10, (32, 32, 3))
    network.freeze_trunk(VGG16, model, 0)
    assert not any(layer.trainable for layer in model.get_layer(network.TRUNK_NAME).layers)
    network.freeze_trunk(VGG16, model, 2)
    trainable = {layer.name for layer in model.get_layer(network.TRUNK_NAME).layers if layer.trainable}
    assert trainable == {"block4_conv1", "block4_conv2", "block4_conv3", "block4_pool",
                         "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"}


def test_save_load_round_trip_in_safe_mode(tmp_path):
    model = build_model(vgg_config(**{"vgg16.image_size": 48}), 10, (32, 32, 3))
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    model.save(tmp_path / "vgg.keras")
    loaded = keras.saving.load_model(tmp_path / "vgg.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-4)


def test_local_weights_file_in_keras_notop_layout_loads_every_layer(tmp_path):
    path = tmp_path / "vgg16_notop.h5"
    written = write_legacy_notop_weights(path)
    base = network.build_trunk(VGG16, vgg_config(**{"vgg16.weights": str(path)}).vgg16)
    loaded_layers = 0
    for layer in base.layers:
        expected_weights = written.get(layer.name, [])  # the input layer's name differs; it has no weights
        assert len(expected_weights) == len(layer.get_weights())
        for expected, actual in zip(expected_weights, layer.get_weights()):
            np.testing.assert_array_equal(expected, actual)
        loaded_layers += bool(expected_weights)
    assert loaded_layers == 13  # every conv layer of VGG16


def test_keras3_weights_file_also_loads(tmp_path):
    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mine.weights.h5"
    source.save_weights(path)
    base = network.build_trunk(VGG16, vgg_config(**{"vgg16.weights": str(path)}).vgg16)
    for expected, actual in zip(source.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(expected, actual)


def test_bad_weights_are_refused(tmp_path):
    with pytest.raises(CnnlabError, match="weights file not found"):
        network.resolve_weights(str(tmp_path / "missing.h5"))
    with pytest.raises(CnnlabError, match="unknown --weights value 'imagenett'"):
        network.resolve_weights("imagenett")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(CnnlabError, match="is not an HDF5 weights file"):
        network.resolve_weights(str(text))
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
        handle.create_group("dense").attrs["weight_names"] = [b"kernel:0"]
        handle["dense"].create_dataset("kernel:0", data=np.zeros((3, 3)))
    with pytest.raises(CnnlabError, match="does not hold VGG16 no-top weights"):
        network.build_trunk(VGG16, vgg_config(**{"vgg16.weights": str(wrong)}).vgg16)


def test_imagenet_download_failure_explains_the_offline_options(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: [Errno -3]")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(CnnlabError, match="could not get the ImageNet VGG16 weights .* --weights PATH .* --weights none"):
        network.build_trunk(VGG16, vgg_config(**{"vgg16.weights": "imagenet"}).vgg16)


def test_labels_never_call_a_random_start_fine_tuned():
    assert model_label(vgg_config()) == "VGG16 from scratch"
    assert model_label(vgg_config(**{"vgg16.weights": "imagenet"})) == "VGG16 fine-tuned (ImageNet)"
    assert model_label(vgg_config(**{"vgg16.weights": "/x/vgg.h5"})) == "VGG16 fine-tuned (vgg.h5)"
    frozen = vgg_config(**{"vgg16.weights": "imagenet", "vgg16.unfreeze_blocks": 0})
    assert model_label(frozen) == "VGG16 on frozen ImageNet features"
    assert model_label(vgg_config(**{"vgg16.finetune_epochs": 0})) == "VGG16 from scratch"
    assert model_label(load_config("seed")) == "CNN from scratch"


@pytest.mark.parametrize("first_block, feature_shape", [(4, (4, 4, 256)), (5, (2, 2, 512)), (6, (1, 1, 512))])
def test_split_before_a_block_chains_back_to_the_whole_model(first_block, feature_shape):
    model = build_model(vgg_config(), 10, (32, 32, 3))
    extractor, rest = network.split_before_block(VGG16, model, first_block)
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    assert extractor.output_shape[1:] == feature_shape
    np.testing.assert_allclose(rest.predict(extractor.predict(images, verbose=0), verbose=0),
                               model.predict(images, verbose=0), rtol=1e-4, atol=1e-6)
    shared = {id(weight) for weight in model.weights}  # the same variables, not copies: training one trains the other
    assert {id(weight) for weight in extractor.weights + rest.weights} <= shared
    trained_blocks = {name[:6] for name in layer_names(rest) if name.startswith("block")}
    assert trained_blocks == {f"block{block}" for block in range(first_block, 6)}


def test_each_phase_caches_the_output_of_the_blocks_it_keeps_frozen():
    config = vgg_config(**{"vgg16.top_block": 4, "vgg16.unfreeze_blocks": 2, "vgg16.head_epochs": 3,
                           "vgg16.finetune_epochs": 2, "train.epochs": 9})
    head, finetune = network.phases(VGG16, config.vgg16, config)
    assert (head.epochs, finetune.epochs) == (3, 2)  # the head's own count, not the CNN's train.epochs
    assert head.cached_features.keywords == {"first_block": 5}  # the whole (cut) base
    assert finetune.cached_features.keywords == {"first_block": 3}  # below the two unfrozen blocks
    only_config = vgg_config(**{"vgg16.unfreeze_blocks": 0, "train.epochs": 7})
    (only,) = network.phases(VGG16, only_config.vgg16, only_config)
    assert only.epochs == 7 and only.cached_features.keywords == {"first_block": 6}
    everything_config = vgg_config(**{"vgg16.unfreeze_blocks": 5})
    everything = network.phases(VGG16, everything_config.vgg16, everything_config)
    assert everything[1].cached_features is None  # nothing stays frozen: nothing to compute once
    shifted = vgg_config(**{"data.translate": 2})
    assert all(phase.cached_features is None for phase in network.phases(VGG16, shifted.vgg16, shifted))  # shifts need the images


def test_top_block_keeps_the_blocks_below_it_with_their_weights(tmp_path):
    whole = build_model(vgg_config(**{"vgg16.image_size": 64}), 10, (32, 32, 3))
    cut = build_model(vgg_config(**{"vgg16.image_size": 64, "vgg16.top_block": 4, "vgg16.unfreeze_blocks": 1,
                                    "vgg16.head_batch_norm": True}), 10, (32, 32, 3))
    assert cut.get_layer(network.TRUNK_NAME).output.shape[1:] == (4, 4, 512)  # block 4's pooling at 64 px
    assert not any(layer.name.startswith("block5") for layer in cut.get_layer(network.TRUNK_NAME).layers)
    assert "head_norm" in [layer.name for layer in cut.layers]
    block5 = 3 * (512 * 512 * 9 + 512)  # its three convolutions
    assert whole.get_layer(network.TRUNK_NAME).count_params() - cut.get_layer(network.TRUNK_NAME).count_params() == block5
    network.freeze_trunk(VGG16, cut, 1)  # the last block the model keeps is block 4
    assert {layer.name[:6] for layer in cut.get_layer(network.TRUNK_NAME).layers if layer.trainable} == {"block4"}
    assert model_label(vgg_config(**{"vgg16.top_block": 4})) == "VGG16 to block 4 from scratch"
    assert model_label(vgg_config(**{"vgg16.top_block": 4, "vgg16.weights": "/x/hed.h5",
                                     "vgg16.unfreeze_blocks": 0})) == "VGG16 to block 4 on frozen hed.h5 features"
    cut.save(tmp_path / "cut.keras")  # a plain functional model: loads in safe mode, computes the same
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    loaded = keras.saving.load_model(tmp_path / "cut.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), cut.predict(images, verbose=0), rtol=1e-4)


def test_unfreezing_more_blocks_than_the_model_keeps_is_refused():
    with pytest.raises(CnnlabError, match=r"vgg16.unfreeze_blocks \(3\) cannot exceed vgg16.top_block \(2\)"):
        vgg_config(**{"vgg16.top_block": 2, "vgg16.unfreeze_blocks": 3})


# ---------------------------------------------------------------------------------------------------------------------
# every backbone through the same recipe

BACKBONES = {kind.backbone.name: kind.backbone for kind in KINDS.values() if kind.backbone is not None}
# Two in the default tier: EfficientNet-Lite0 (cnnlab's own network) and MobileNetV3Small (a Keras Application that
# normalises its input itself and has batch norms); the full tier checks every backbone.
BACKBONE_PARAMS = [name if name in ("efficientnet_lite0", "mobilenetv3small") else
                   pytest.param(name, marks=pytest.mark.slow) for name in BACKBONES]


def backbone_config(name: str, **overrides):
    return load_config("seed", {"model": name, f"{name}.weights": "none", f"{name}.image_size": 32,
                                f"{name}.head_batch_norm": True, **overrides})


@pytest.mark.parametrize("name", BACKBONE_PARAMS)
def test_each_backbone_has_the_blocks_it_declares_and_is_cut_after_each_of_them(name):
    """Each block ends where a single tensor is all later layers read: cut there, the two parts chained compute
    exactly the model, and each block's output is at a lower resolution than the last."""
    backbone = BACKBONES[name]
    model = build_model(backbone_config(name), 10, (32, 32, 3))
    trunk = model.get_layer(network.TRUNK_NAME)
    at_224 = network.build_trunk(backbone, getattr(backbone_config(name), name), 224)
    ends = network.block_ends(backbone, at_224)
    assert len(ends) == backbone.blocks
    images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    sizes = []
    for first_block in range(1, backbone.blocks + 2):
        extractor, rest = network.split_before_block(backbone, model, first_block)
        sizes.append(extractor.output_shape[1])
        np.testing.assert_allclose(rest.predict(extractor.predict(images, verbose=0), verbose=0), expected,
                                   rtol=1e-4, atol=1e-5)
    assert trunk.output_shape[1:] == extractor.output_shape[1:]  # cut after the top block: the whole trunk
    resolutions = [at_224.operations[end].output.shape[1] for end in ends]
    assert resolutions == sorted(resolutions, reverse=True) and len(set(resolutions)) == len(resolutions)


@pytest.mark.parametrize("name", BACKBONE_PARAMS)
def test_fine_tuning_unfreezes_the_top_blocks_alone_and_the_tally_counts_the_model(name):
    backbone = BACKBONES[name]
    config = backbone_config(name, **{f"{name}.top_block": 3, f"{name}.unfreeze_blocks": 1})
    model = build_model(config, 10, (32, 32, 3))
    network.freeze_trunk(backbone, model, 0)
    assert not model.get_layer(network.TRUNK_NAME).trainable_weights
    network.freeze_trunk(backbone, model, 1)
    extractor, rest = network.split_before_block(backbone, model, 3)
    trained = {id(weight) for weight in model.get_layer(network.TRUNK_NAME).trainable_weights}
    head = {id(weight) for layer in model.layers if layer.name.startswith(network.HEAD_PREFIX)
            or layer.name == network.OUTPUT_NAME for weight in layer.trainable_weights}
    assert trained and not trained & {id(weight) for weight in extractor.weights}  # blocks 1-2 stay frozen
    assert {id(weight) for weight in rest.trainable_weights} == trained | head  # block 3 and the head train
    tally = kind_of(config).tally(config, 10, (32, 32, 3))
    assert tally.parameters == model.count_params()


def test_each_backbone_normalises_its_input_as_its_keras_preprocess_input_does():
    from cnnlab.models.transfer import MINUS_ONE_TO_ONE, TORCH

    images = np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    for preprocessing, module in ((CAFFE, keras.applications.vgg16), (MINUS_ONE_TO_ONE, keras.applications.resnet_v2),
                                  (TORCH, keras.applications.densenet)):
        layer = network.affine_preprocessing(preprocessing)
        np.testing.assert_allclose(np.asarray(layer(images)), module.preprocess_input(images.copy()), rtol=1e-5,
                                   atol=1e-4)


def test_backbone_labels_say_where_the_weights_came_from():
    assert model_label(backbone_config("resnet50v2")) == "ResNet50V2 from scratch"
    assert model_label(load_config("quick", {"model": "efficientnet_lite0"})) == (
        "EfficientNet-Lite0 on frozen ImageNet features")
    assert model_label(backbone_config("densenet121", **{"densenet121.weights": "/x/d.h5",
                                                         "densenet121.top_block": 4})) == (
        "DenseNet121 to block 4 fine-tuned (d.h5)")


def test_fine_tuning_keeps_the_trunks_batch_norms_and_trains_its_top_block():
    """Keras hands fit's training=True on into nested models: a trainable batch norm would normalise by batch
    statistics and overwrite the pretrained ones. They stay frozen; the top block's convolutions train."""
    name = "efficientnet_lite0"
    backbone = BACKBONES[name]
    model = build_model(backbone_config(name, **{f"{name}.top_block": 2}), 10, (32, 32, 3))
    network.freeze_trunk(backbone, model, 1)
    trunk = model.get_layer(network.TRUNK_NAME)
    norms = [layer for layer in trunk.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [weight.numpy().copy() for layer in norms for weight in layer.weights]
    convs = [weight for weight in trunk.trainable_weights]
    conv_before = [weight.numpy().copy() for weight in convs]
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    images = np.random.default_rng(5).integers(0, 256, (16, 32, 32, 3)).astype("float32")
    model.fit(images, np.eye(10)[np.arange(16) % 10], epochs=1, batch_size=8, verbose=0)
    assert all(np.array_equal(old, weight.numpy()) for old, weight in zip(before, (w for layer in norms
                                                                                    for w in layer.weights)))
    assert convs and all(not np.array_equal(old, weight.numpy()) for old, weight in zip(conv_before, convs))
