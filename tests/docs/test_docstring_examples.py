"""Every public docstring example in the updlrm namespace runs and prints what it says.

Collected through the installed package names (``updlrm.emulator``, not ``emulator``),
because the component folders are mapped onto one import namespace.
"""

import doctest
import importlib
import importlib.util
import pkgutil
import re
import warnings

import pytest

COMPONENTS = (
    "updlrm",
    "updlrm.emulator",
    "updlrm.partitioner",
    "updlrm.host",
    "updlrm.dpu_kernels",
    "updlrm.models",
    "updlrm.serve",
)


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


# An example whose source carries "# needs: <module>" uses an optional dependency; when
# that module is missing, it and the rest of its docstring are skipped (with a warning
# naming the dependency) instead of failing.
NEEDS = re.compile(r"#\s*needs:\s*([A-Za-z_][\w.]*)")


def _skip_missing_optional(test: doctest.DocTest) -> list[str]:
    missing, skipping = [], False
    for example in test.examples:
        need = NEEDS.search(example.source)
        if need and importlib.util.find_spec(need.group(1)) is None:
            skipping = True
            missing.append(need.group(1))
        if skipping:
            example.options[doctest.SKIP] = True
    return missing


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    for test in doctest.DocTestFinder().find(module, module.__name__, globs=vars(module).copy()):
        for missing in _skip_missing_optional(test):
            warnings.warn(
                f"{test.name}: examples skipped, optional dependency {missing!r} is not installed", stacklevel=1
            )
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module_name}"


def test_optional_examples_are_skipped_when_the_dependency_is_missing():
    test = doctest.DocTestParser().get_doctest(
        ">>> x = 1\n>>> import not_a_module_xyz  # needs: not_a_module_xyz\n>>> x\n2\n", {}, "t", None, 0
    )
    assert _skip_missing_optional(test) == ["not_a_module_xyz"]
    assert [bool(e.options.get(doctest.SKIP)) for e in test.examples] == [False, True, True]
