"""cnnlab: train a CNN from scratch on CIFAR-10, fine-tune a pretrained backbone, and compare them honestly.

The pipeline, in the order data flows (each a package of its own):
    config -> data -> models -> runs -> training -> evaluation -> report -> serving; experiment.py runs whole jobs,
    cli.py is the command line

The Python API, in that order (docs/tutorial.py walks through it):

    import cnnlab

    cnnlab.import_keras()                                   # optional: start Keras quietly, as the CLI does
    config = cnnlab.load_config("quick", {"data.source": "cifar-10-python.tar.gz"})
    data = cnnlab.load_dataset(config.data, config.train.seed)
    splits = cnnlab.make_splits(data, config.data.val_size, config.train.seed, config.data.train_limit)
    model = cnnlab.build_model(config, len(data.class_names), splits.x_train.shape[1:])   # to look at: summary()
    run_dir = cnnlab.train_run(config, "runs/my-cnn")       # train, evaluate, write a run directory
    metrics = cnnlab.Run(run_dir).metrics()                # the run directory as an object: config, metrics, model
    cnnlab.write_report([run_dir, other_run_dir], "reports/mine")

Each name is imported on first use (a module-level `__getattr__`), so `import cnnlab` imports no Keras: the command
line and the report rely on that, and Keras takes seconds to import.
"""

import importlib

__version__ = "0.1.0"

# Public name -> (module, name there). `report` is a package of cnnlab, so the function `experiment.report` is exported
# as `write_report`, a name that no submodule import can overwrite.
_LAZY_EXPORTS = {
    "RunConfig": ("cnnlab.config", "RunConfig"),
    "load_config": ("cnnlab.config", "load_config"),
    "available_presets": ("cnnlab.config", "available_presets"),
    "load_dataset": ("cnnlab.data", "load_dataset"),
    "make_splits": ("cnnlab.data", "make_splits"),
    "build_model": ("cnnlab.models.factory", "build_model"),
    "model_label": ("cnnlab.models", "model_label"),
    "import_keras": ("cnnlab.backends", "import_keras"),
    "train_run": ("cnnlab.experiment", "train_run"),
    "resume_run": ("cnnlab.experiment", "resume_run"),
    "evaluate_run": ("cnnlab.experiment", "evaluate_run"),
    "load_run_model": ("cnnlab.runs.run", "load_run_model"),
    "Run": ("cnnlab.runs.run", "Run"),
    "compare": ("cnnlab.experiment", "compare"),
    "write_report": ("cnnlab.experiment", "report"),
    "read_metrics": ("cnnlab.runs.metrics", "read_metrics"),
    "read_history": ("cnnlab.runs.history", "read_history"),
    "CnnlabError": ("cnnlab.common.errors", "CnnlabError"),
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
    module, attribute = _LAZY_EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # found once; later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_EXPORTS])
