import dataclasses

import keras
import numpy as np
import pytest

from cnnlab.backends import placement_for
from cnnlab.config import load_config
from cnnlab.models.factory import build_model
from cnnlab.models.recipe import Lookahead, WarmupLinear, compile_for_phase


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
