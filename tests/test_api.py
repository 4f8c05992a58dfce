"""The package's Python API: `cnnlab.<name>` for the library's entry points, each imported on first use."""

import importlib
import subprocess
import sys

import pytest

import cnnlab


def test_importing_cnnlab_imports_no_keras():
    # The command line imports cnnlab first and Keras only once its input is checked: Keras takes seconds.
    code = "import sys, cnnlab; assert 'keras' not in sys.modules, 'keras imported'; print(cnnlab.__version__)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_what_commands_import_before_starting_keras_imports_no_keras():
    # Each command checks its input with these, then starts Keras quietly (backends.import_keras); a module among them
    # that imported Keras at its top would start the backend early, with its start-up noise on the terminal.
    modules = ["cnnlab.cli", "cnnlab.experiment", "cnnlab.runs.run", "cnnlab.serving.export", "cnnlab.serving.predict",
               "cnnlab.report.builder", "cnnlab.training.bench", "cnnlab.models"]
    code = f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; " \
           "assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("name", cnnlab.__all__)
def test_each_api_name_is_the_library_function_it_names(name):
    module, attribute = cnnlab._LAZY_EXPORTS[name]
    assert getattr(cnnlab, name) is getattr(importlib.import_module(module), attribute)
    assert name in dir(cnnlab)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian_run'"):
        cnnlab.trian_run  # noqa: B018


def test_submodules_stay_modules_beside_the_api():
    # `write_report` is not called `report`: that is a package of cnnlab, which importing it must not hide.
    import cnnlab.report.builder

    assert cnnlab.write_report is importlib.import_module("cnnlab.experiment").report
    assert cnnlab.report.builder.__name__ == "cnnlab.report.builder"
