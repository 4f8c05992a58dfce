"""The recipe's optimizer, learning rate schedule and loss, and lookahead weight averaging.

The tutorial's recipe is Adam at a constant learning rate with plain cross-entropy; the fast recipe is SGD with
Nesterov momentum, a warm-up then linear decay, label smoothing and lookahead. Both are built here from the config, so
every training phase and `cnnlab bench` compile models the same way.
"""

from __future__ import annotations

import contextlib

import keras

from cnnlab.backends import engine_for
from cnnlab.config import RunConfig, TrainConfig


class Lookahead(keras.callbacks.Callback):
    """Every `every` steps, move a running average of the weights towards the weights, then the weights onto it.

    The average's memory grows over training (0 at the start, 0.95**5 by the end, cubically), and the final weights
    are the average: the late, noisy steps of a high learning rate are smoothed out (Zhang et al., 2019; Jordan,
    2024). The average starts from the weights at the first pull of a training (or of a resumed run). It is kept in
    non-trainable Keras variables, created in `scope` (the placement's), and updated with Keras ops where the weights
    live: no copy to the host and back every few steps.
    """

    def __init__(self, every: int, total_steps: int, scope=contextlib.nullcontext):
        super().__init__()
        self.every, self.total_steps, self.scope = every, total_steps, scope
        self.average: list[keras.Variable] | None = None
        self.last_step = 0

    def _step(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _variables(self):
        return [variable for variable in self.model.weights if "float" in str(variable.dtype)]

    def _pull(self, decay: float) -> None:
        variables = self._variables()
        if self.average is None:
            with self.scope():
                self.average = [keras.Variable("zeros", shape=variable.shape, dtype=variable.dtype, trainable=False,
                                               name=f"lookahead_{index}") for index, variable in enumerate(variables)]
            for average, variable in zip(self.average, variables):
                # Assigned, not passed as the initial value, which TensorFlow would keep as a live view of the weights;
                # copied (here and below) as JAX's training step frees the buffers of the weights it is given, and an
                # assign on JAX shares the buffer.
                average.assign(keras.ops.copy(variable))
        for average, variable in zip(self.average, variables):
            average.assign(average * decay + variable * (1 - decay))
            variable.assign(keras.ops.copy(average))

    def on_train_begin(self, logs=None):
        self.last_step = self._step()  # a resumed run goes on from its restored step

    def on_train_batch_end(self, batch, logs=None):
        # Keras calls this once per `steps_per_execution` steps: pull whenever a multiple of `every` was passed.
        step = self._step()
        if step // self.every > self.last_step // self.every:
            self._pull(0.95**5 * min(step / self.total_steps, 1.0) ** 3)
        self.last_step = step

    def on_epoch_end(self, epoch, logs=None):
        # At the last step the weights become the average, before checkpoints save the epoch.
        if self.last_step >= self.total_steps and self.average is not None:
            self._pull(1.0)


@keras.saving.register_keras_serializable(package="cnnlab")
class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `peak * start` to `peak` over the first `warmup` of the steps, then linear decay to
    `peak * final` at the last step."""

    def __init__(self, peak: float, total_steps: int, warmup: float, start: float, final: float):
        self.peak, self.total_steps, self.warmup, self.start, self.final = peak, total_steps, warmup, start, final

    def __call__(self, step):
        progress = keras.ops.cast(step, "float32") / self.total_steps
        rising = self.start + (1 - self.start) * progress / max(self.warmup, 1e-9)
        falling = 1 - (1 - self.final) * (progress - self.warmup) / max(1 - self.warmup, 1e-9)
        return self.peak * keras.ops.where(progress < self.warmup, rising, keras.ops.maximum(falling, self.final))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup, "start": self.start,
                "final": self.final}


@keras.saving.register_keras_serializable(package="cnnlab")
class ConvMuon(keras.optimizers.SGD):
    """SGD for every weight but the convolution kernels, which take Muon's step (Jordan et al., 2024), as the
    airbench94_muon record trains its net: Nesterov momentum, the step orthogonalised by Newton-Schulz iterations on
    the kernel seen as a matrix (output channels x the rest), each kernel rescaled to norm sqrt(output channels)
    before its step, which does what weight decay does for SGD.

    Keras 3.15 has `keras.optimizers.Muon`, but it orthogonalises 2-D weights only and hands all others, the
    convolution kernels among them, to AdamW: the reverse of what a CNN wants. Written in keras.ops: any backend.
    """

    def __init__(self, learning_rate=0.01, muon_lr_scale: float = 0.16, muon_momentum: float = 0.6,
                 ns_steps: int = 5, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.muon_lr_scale, self.muon_momentum, self.ns_steps = muon_lr_scale, muon_momentum, ns_steps

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if not self.momentums:  # SGD keeps none at momentum 0; the kernels' Muon momentum lives in the same slots
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        if len(variable.shape) != 4:
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        gradient = keras.ops.cast(gradient, variable.dtype)
        self.assign(momentum, self.muon_momentum * momentum + gradient)
        direction = gradient + self.muon_momentum * momentum if self.nesterov else momentum
        outputs = variable.shape[-1]
        self.assign(variable, variable * (outputs**0.5 / (keras.ops.norm(keras.ops.reshape(variable, (-1,))) + 1e-7)))
        step = orthogonalised(keras.ops.transpose(keras.ops.reshape(direction, (-1, outputs))), self.ns_steps)
        rate = keras.ops.cast(learning_rate, variable.dtype) * self.muon_lr_scale
        self.assign_sub(variable, rate * keras.ops.reshape(keras.ops.transpose(step), variable.shape))

    def get_config(self):
        return {**super().get_config(), "muon_lr_scale": self.muon_lr_scale, "muon_momentum": self.muon_momentum,
                "ns_steps": self.ns_steps}


def orthogonalised(matrix, steps: int = 5):
    """The nearest semi-orthogonal matrix to `matrix`, approximately (its singular values brought near 1): Muon's
    quintic Newton-Schulz iteration, whose coefficients maximise the slope at zero so that few steps suffice."""
    a, b, c = 3.4445, -4.7750, 2.0315
    wide = matrix.shape[0] <= matrix.shape[1]
    x = matrix if wide else keras.ops.transpose(matrix)
    x = x / (keras.ops.norm(x) + 1e-7)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ keras.ops.transpose(x)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else keras.ops.transpose(x)


def learning_rate_schedule(train: TrainConfig, learning_rate: float, total_steps: int):
    """The phase's learning rate: a constant, or a `WarmupLinear` schedule over its `total_steps`."""
    if train.lr_schedule == "warmup_linear":
        return WarmupLinear(learning_rate, total_steps, train.warmup_fraction, train.warmup_start,
                            train.final_lr_fraction)
    return learning_rate


def compile_for_phase(model: keras.Model, config: RunConfig, learning_rate: float, total_steps: int,
                      placement) -> None:
    """The optimizer, schedule and loss of the recipe; XLA, steps per call and the optimizer's kernels as `placement`
    (a `cnnlab.backends.Placement`) says its backend and device want them."""
    train = config.train
    rate = learning_rate_schedule(train, learning_rate, total_steps)
    if train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(rate, momentum=train.momentum, nesterov=train.nesterov)
    elif train.optimizer == "muon":
        optimizer = ConvMuon(rate, momentum=train.momentum, nesterov=train.nesterov, muon_lr_scale=train.muon_lr_scale,
                             muon_momentum=train.muon_momentum)
    else:
        optimizer = keras.optimizers.Adam(rate)
    model.compile(
        optimizer=engine_for(placement.backend).fused(optimizer),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=["accuracy"],
        **placement.compile_options(train.steps_per_execution),
    )
