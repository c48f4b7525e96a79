"""Every public docstring example in the updlrm namespace runs and prints what it says.

Collected through the installed package names (``updlrm.emulator``, not ``emulator``),
because the component folders are mapped onto one import namespace.
"""

import doctest
import importlib
import pkgutil

import pytest


COMPONENTS = ("updlrm", "updlrm.emulator", "updlrm.partitioner", "updlrm.host", "updlrm.dpu_kernels", "updlrm.models",
              "updlrm.serve")


def _modules() -> list[str]:
    # Each component is walked from its own package: in an editable install the
    # subpackages live in other folders than updlrm/.
    names = set()
    for package_name in COMPONENTS:
        package = importlib.import_module(package_name)
        names.add(package_name)
        for info in pkgutil.iter_modules(package.__path__, package_name + "."):
            if not info.name.rsplit(".", 1)[-1].startswith("__") and info.name not in COMPONENTS:
                names.add(info.name)
    return sorted(names)


MODULES = _modules()


def test_every_component_is_walked():
    for component in ("emulator", "partitioner", "host", "perfmodel", "tbe", "plan"):
        assert any(name.startswith(f"updlrm.{component}") for name in MODULES), component


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"
