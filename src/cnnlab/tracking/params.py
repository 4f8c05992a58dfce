"""What every tracker records of a run's configuration: the same params in MLflow and in TensorBoard's HParams."""

from __future__ import annotations

from cnnlab.config import toml_value


def run_params(config) -> dict[str, object]:
    """The run's settings, each under its dotted name as --set takes it: numbers, booleans and text (a list as its
    TOML text, as --set takes it too); unset ones left out, and so are the sections of model kinds other than the run's: they played no part."""
    settings = config.to_dict()
    values = {key: settings[key] for key in ("model", "preset")}
    for section in ("data", "train", config.model):
        for key, value in settings[section].items():
            if value is not None:
                values[f"{section}.{key}"] = value if isinstance(value, (bool, int, float, str)) else toml_value(value)
    return values
