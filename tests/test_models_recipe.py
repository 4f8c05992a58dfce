import csv
import dataclasses
import json

import keras
import numpy as np
import pytest

from cnnlab.backends import placement_for
from cnnlab.config import load_config
from cnnlab.models.factory import build_model
from cnnlab.models.recipe import ConvMuon, Lookahead, WarmupLinear, compile_for_phase, orthogonalised
from conftest import TINY_DATA, TINY_KINDS, run_cnnlab, run_metrics


def tiny_config(**overrides):
    return load_config("seed", {"cnn.conv_blocks": [[8], [16]], "cnn.dense_units": [32], **overrides})


def test_warmup_linear_schedule_rises_then_falls_to_its_floor():
    schedule = WarmupLinear(peak=2.0, total_steps=100, warmup=0.2, start=0.2, final=0.07)
    values = [float(schedule(step)) for step in (0, 10, 20, 60, 100, 150)]
    np.testing.assert_allclose(values, [0.4, 1.2, 2.0, 2.0 * (1 - 0.93 * 0.5), 0.14, 0.14], rtol=1e-5)
    from_zero = WarmupLinear(peak=1.0, total_steps=100, warmup=0.5, start=0.0, final=0.1)
    assert float(from_zero(0)) == 0.0  # the floor holds only for the decay
    rebuilt = WarmupLinear(**schedule.get_config())
    assert float(rebuilt(37)) == float(schedule(37))


def test_compile_for_phase_builds_the_configured_recipe():
    config = tiny_config(**{"train.optimizer": "sgd", "train.momentum": 0.85, "train.nesterov": True,
                            "train.label_smoothing": 0.2, "train.lr_schedule": "warmup_linear",
                            "train.steps_per_execution": 4})
    model = build_model(config, 10, (32, 32, 3))
    compile_for_phase(model, config, 1.5, 50, dataclasses.replace(placement_for(config), jit_compile=False,
                                                                   steps_per_execution_limit=None))
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.nesterov and model.optimizer.momentum == 0.85
    assert isinstance(model.optimizer._learning_rate, WarmupLinear) and model.optimizer._learning_rate.peak == 1.5
    assert model.loss.label_smoothing == 0.2
    assert model.jit_compile is False and model.steps_per_execution == 4


def test_compile_for_phase_takes_steps_per_call_from_the_placement():
    config = tiny_config(**{"train.steps_per_execution": 4})
    model = build_model(config, 10, (32, 32, 3))
    # PyTorch's placement runs one step per call; Keras's torch trainer refuses more.
    compile_for_phase(model, config, 0.01, 50, dataclasses.replace(placement_for(config), jit_compile=False,
                                                                    steps_per_execution_limit=1))
    assert model.steps_per_execution == 1


def test_lookahead_keeps_its_average_in_keras_variables_and_follows_the_numpy_reference():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    kernel = model.layers[-1].kernel
    lookahead = Lookahead(every=2, total_steps=8)
    lookahead.set_model(model)
    lookahead.on_train_begin()
    rng, reference = np.random.default_rng(0), None
    for step in range(1, 9):  # an optimizer's steps, each leaving new weights, as fit would
        weights = rng.normal(size=(3, 2)).astype("float32")
        kernel.assign(weights)
        model.optimizer.iterations.assign(step)
        lookahead.on_train_batch_end(step - 1)
        if step % 2 == 0:  # the reference: the same running average in NumPy
            decay = 0.95**5 * (step / 8) ** 3
            reference = weights if reference is None else decay * reference + (1 - decay) * weights
        np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), reference if step % 2 == 0 else weights,
                                   rtol=1e-6, atol=1e-7)
    kernel.assign(np.zeros((3, 2), "float32"))
    lookahead.on_epoch_end(0)  # at the last step the weights become the average
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), reference, rtol=1e-6, atol=1e-7)
    assert all(isinstance(average, keras.Variable) and not average.trainable for average in lookahead.average)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="PyTorch runs one step per call")
def test_lookahead_pulls_every_n_steps_whatever_the_steps_per_execution():
    class Counted(Lookahead):
        def _pull(self, decay):
            pulls.append((self._step(), decay))
            super()._pull(decay)

    pulls = []
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=4)
    x, y = np.zeros((24, 2)), np.zeros((24, 1))
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[Counted(every=5, total_steps=24)])
    # 12 steps an epoch, seen by callbacks at steps 4, 8, 12, ...: a pull after passing each multiple of 5 (at 8, 12,
    # 16 and 20), and the final one at the last step.
    assert [step for step, _ in pulls] == [8, 12, 16, 20, 24]
    assert pulls[-1][1] == 1.0 and pulls[0][1] < pulls[-2][1] < 0.95**5


def test_orthogonalised_brings_every_singular_value_near_one_and_keeps_the_singular_vectors():
    rng = np.random.default_rng(0)
    for shape in [(16, 72), (72, 16)]:  # a kernel's matrix is wide; a tall one is transposed and back
        matrix = rng.normal(size=shape).astype("float32") * rng.uniform(0.01, 10)
        found = keras.ops.convert_to_numpy(orthogonalised(keras.ops.convert_to_tensor(matrix)))
        u, _, vt = np.linalg.svd(matrix, full_matrices=False)
        assert found.shape == shape
        assert np.all((np.linalg.svd(found, compute_uv=False) > 0.5) & (np.linalg.svd(found, compute_uv=False) < 1.3))
        polar = u @ vt  # the exact orthogonal factor Muon approximates
        assert np.sum(found * polar) / (np.linalg.norm(found) * np.linalg.norm(polar)) > 0.97


def test_conv_muon_steps_kernels_by_muon_and_everything_else_by_sgd():
    kernel = keras.Variable(np.random.default_rng(1).normal(size=(3, 3, 4, 8)).astype("float32"))
    bias = keras.Variable(np.ones(8, "float32"))
    gradients = [np.random.default_rng(seed).normal(size=variable.shape).astype("float32")
                 for seed, variable in ((2, kernel), (3, bias))]
    start = [kernel.numpy(), bias.numpy()]
    optimizer = ConvMuon(0.1, momentum=0.9, nesterov=True, muon_lr_scale=0.5, muon_momentum=0.6)
    optimizer.apply_gradients(zip(gradients, [kernel, bias]))

    reference = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    same_bias = keras.Variable(start[1])
    reference.apply_gradients([(gradients[1], same_bias)])
    np.testing.assert_allclose(bias.numpy(), same_bias.numpy(), rtol=1e-6)
    # The kernel: rescaled to norm sqrt(8), then the orthogonalised Nesterov direction (momentum 0.6 from zero:
    # g + 0.6 g) as an 8 x 36 matrix, times 0.1 x 0.5
    rescaled = start[0] * np.sqrt(8) / np.linalg.norm(start[0])
    direction = keras.ops.convert_to_numpy(orthogonalised(keras.ops.convert_to_tensor(1.6 * gradients[0].reshape(-1, 8).T)))
    np.testing.assert_allclose(kernel.numpy(), rescaled - 0.05 * direction.T.reshape(3, 3, 4, 8), atol=1e-5)


def test_compile_for_phase_builds_muon_from_the_config():
    config = tiny_config(**{"train.optimizer": "muon", "train.momentum": 0.85, "train.nesterov": True,
                            "train.muon_lr_scale": 0.2, "train.muon_momentum": 0.5})
    model = build_model(config, 10, (32, 32, 3))
    compile_for_phase(model, config, 1.5, 50, placement_for(config))
    assert isinstance(model.optimizer, ConvMuon) and model.optimizer.momentum == 0.85
    assert (model.optimizer.muon_lr_scale, model.optimizer.muon_momentum) == (0.2, 0.5)


def test_the_fast_net_trains_with_muon_in_a_users_process(synthetic_archive, tmp_path):
    run_dir = tmp_path / "muon"
    done = run_cnnlab("train", "--data", synthetic_archive, *TINY_KINDS["fastnet"], *TINY_DATA, "--epochs", "2",
                      "--set", "train.optimizer=muon", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "config.json").read_text())["train"]["optimizer"] == "muon"
    # On the training batches: in these 16 steps the batch norms' running statistics have not settled, so the test
    # accuracy swings with float rounding (measured on the AVX2 EPYC in float32: 10-20% for the same run with either
    # kind of convolution gradients, where the Xeon in bfloat16 had over 30%); ten colours, chance is 10%
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    assert float(history[-1]["loss"]) < float(history[0]["loss"]) and float(history[-1]["accuracy"]) > 0.25


def test_conv_muon_keeps_kernel_momentum_even_where_sgd_has_none():
    kernel = keras.Variable(np.ones((3, 3, 2, 4), "float32"))
    optimizer = ConvMuon(0.1, momentum=0.0, muon_momentum=0.5)
    for _ in range(2):
        optimizer.apply_gradients([(np.ones((3, 3, 2, 4), "float32"), kernel)])
    assert np.all(np.isfinite(kernel.numpy())) and not np.allclose(kernel.numpy(), 1.0)
    assert len(optimizer.momentums) == 1 and np.allclose(optimizer.momentums[0].numpy(), 1.5)  # 0.5 x 1 + 1
