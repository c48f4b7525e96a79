"""Backend detection and selection (fake SDK trees), ``updlrm info``, and the SDK-only paths."""

import json
import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from updlrm.backends import BackendUnavailable, SdkInfo, detect_sdk, info_command, is_emulator_shim, resolve_backend
from updlrm.cli import main


def write_tool(path, text="#!/bin/sh\necho tool\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# A DPU compiler that "works": writes a non-empty file where -o points.
WORKING_COMPILER = '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && echo dpu-elf > "$2"; shift; done\n'
# Fails the way the public SDK's clang does without its libLLVM.
BROKEN_COMPILER = (
    '#!/bin/sh\necho "$0: error while loading shared libraries: libLLVM-12git.so: cannot open '
    'shared object file: No such file or directory" >&2\nexit 127\n'
)


def fake_sdk(root, *, with_lib=True, compiler=WORKING_COMPILER, version="2025.1.0"):
    write_tool(root / "bin" / "dpu-upmem-dpurte-clang", compiler)
    write_tool(
        root / "bin" / "dpu-pkg-config",
        f'#!/bin/sh\ncase "$1" in --libs) echo -L{root}/lib -ldpu;; --modversion) echo {version};; esac\n',
    )
    if with_lib:
        (root / "lib").mkdir(exist_ok=True)
        (root / "lib" / "libdpu.so").write_bytes(b"\x7fELF")
    return root


def test_no_sdk_means_emulator(tmp_path):
    info = detect_sdk(environ={}, path=str(tmp_path), rank_glob=str(tmp_path / "dpu_rank*"))
    assert not info.installed and not info.hardware
    name, reason = resolve_backend("auto", sdk=info, environ={})
    assert name == "emulator" and "no UPMEM SDK found" in reason
    for backend in ("hw", "simulator"):
        with pytest.raises(BackendUnavailable, match=f"backend '{backend}' needs the UPMEM SDK"):
            resolve_backend(backend, sdk=info, environ={})


def test_sdk_through_upmem_home(tmp_path):
    root = fake_sdk(tmp_path / "upmem")
    info = detect_sdk(environ={"UPMEM_HOME": str(root)}, path="", rank_glob=str(tmp_path / "dpu_rank*"))
    assert info.installed and info.how_found == f"UPMEM_HOME={root}"
    assert info.compiler.endswith("bin/dpu-upmem-dpurte-clang") and info.libdpu.endswith("lib/libdpu.so")
    assert info.version == "2025.1.0"
    name, reason = resolve_backend("auto", sdk=info, environ={})
    assert name == "simulator" and "no /dev/dpu_rank*" in reason
    with pytest.raises(BackendUnavailable, match="needs DPU ranks"):
        resolve_backend("hw", sdk=info, environ={})


def test_sdk_through_path_and_ranks_mean_hardware(tmp_path):
    root = fake_sdk(tmp_path / "sdk")
    for r in range(3):
        (tmp_path / f"dpu_rank{r}").write_text("")
    info = detect_sdk(environ={}, path=str(root / "bin"), rank_glob=str(tmp_path / "dpu_rank*"))
    assert info.installed and info.hardware and len(info.ranks) == 3
    assert info.how_found.startswith("dpu-pkg-config on PATH")
    name, reason = resolve_backend("auto", sdk=info, environ={})
    assert name == "hw" and "3 DPU rank(s)" in reason
    assert resolve_backend("simulator", sdk=info, environ={})[0] == "simulator"
    # UPDLRM_BACKEND overrides what auto picks (e.g. CI on an SDK machine)
    name, reason = resolve_backend("auto", sdk=info, environ={"UPDLRM_BACKEND": "emulator"})
    assert name == "emulator" and reason.startswith("UPDLRM_BACKEND=emulator")
    with pytest.raises(ValueError, match="is not a backend"):
        resolve_backend("auto", sdk=info, environ={"UPDLRM_BACKEND": "gpu"})


def test_sdk_without_libdpu_is_not_installed(tmp_path):
    root = fake_sdk(tmp_path / "sdk", with_lib=False)
    info = detect_sdk(environ={"UPMEM_HOME": str(root)}, path="", rank_glob=str(tmp_path / "none*"))
    assert not info.installed
    assert any("not libdpu" in p for p in info.problems)
    with pytest.raises(BackendUnavailable, match="not libdpu"):
        resolve_backend("simulator", sdk=info, environ={})


def test_emulator_shims_are_not_the_sdk(tmp_path):
    shims = tmp_path / "shims"
    marker = (
        '#!/bin/sh\n# updlrm-emulator-shim: stands in for the UPMEM SDK tool\nexec python -m updlrm.emulator "$@"\n'
    )
    write_tool(shims / "dpu-pkg-config", marker)
    write_tool(shims / "dpu-upmem-dpurte-clang", marker)
    assert is_emulator_shim(shims / "dpu-pkg-config")
    info = detect_sdk(environ={}, path=str(shims), rank_glob=str(tmp_path / "none*"))
    assert not info.installed and len(info.ignored_shims) == 1
    assert resolve_backend("auto", sdk=info, environ={})[0] == "emulator"
    os.rename(shims, tmp_path / "bin")
    info = detect_sdk(environ={"UPMEM_HOME": str(tmp_path)}, path="", rank_glob=str(tmp_path / "none*"))
    assert not info.installed and "emulator shims" in info.problems[0]
    # a real SDK later on PATH is still found behind the shims
    root = fake_sdk(tmp_path / "sdk")
    info = detect_sdk(
        environ={}, path=os.pathsep.join([str(tmp_path / "bin"), str(root / "bin")]), rank_glob=str(tmp_path / "none*")
    )
    assert info.installed and info.pkg_config == str(root / "bin" / "dpu-pkg-config")


def test_resolve_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of auto, hw, simulator, emulator"):
        resolve_backend("gpu")
    assert resolve_backend("emulator", sdk=SdkInfo(), environ={})[0] == "emulator"


def test_info_command_text_and_json():
    runner = CliRunner()
    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    for needle in ("hw", "simulator", "emulator", "auto", "DPU compiler", "libdpu", "DPU ranks", "workers"):
        assert needle in result.output
    result = runner.invoke(info_command, ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backends"]["emulator"]["available"] is True
    assert report["auto"]["backend"] in ("hw", "simulator", "emulator")
    assert report["emulator"]["workers"] >= 1


# ---- the SDK paths: run when the real UPMEM SDK is installed, skipped otherwise ---------

_SDK = detect_sdk()


@pytest.mark.sdk
@pytest.mark.parametrize("backend", ["simulator", "hw"])
def test_tbe_on_sdk_backends(backend):
    if not _SDK.installed:
        pytest.skip("UPMEM SDK not found (set UPMEM_HOME or put dpu-pkg-config on PATH)")
    if backend == "hw" and not _SDK.hardware:
        pytest.skip("no DPU ranks (/dev/dpu_rank*) on this machine")
    import torch

    from updlrm import TableBatchedEmbeddingBags, TableSpec

    tables = [TableSpec("a", 100, 16), TableSpec("b", 7, 8)]
    with TableBatchedEmbeddingBags(tables, backend=backend, nr_dpus=2, seed=1) as tbe:
        assert tbe.backend == backend
        idx = np.array([0, 99, 5, 6, 6, 0])
        off = np.array([0, 2, 3, 5, 6])
        out = tbe(idx, off)
        ref = torch.cat(
            [
                torch.nn.functional.embedding_bag(
                    torch.tensor(idx[:3]),
                    torch.from_numpy(tbe.weights(0)),
                    torch.tensor([0, 2, 3]),
                    mode="sum",
                    include_last_offset=True,
                ),
                torch.nn.functional.embedding_bag(
                    torch.tensor(idx[3:]),
                    torch.from_numpy(tbe.weights(1)),
                    torch.tensor([0, 2, 3]),
                    mode="sum",
                    include_last_offset=True,
                ),
            ],
            dim=1,
        ).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_info_reports_emulator_workers_from_the_environment(monkeypatch):
    monkeypatch.setenv("UPDLRM_EMU_WORKERS", "3")
    result = CliRunner().invoke(info_command, [])
    assert result.exit_code == 0, result.output
    assert "workers        3" in result.output and "UPDLRM_EMU_WORKERS=3" in result.output
    monkeypatch.setenv("UPDLRM_EMU_CC", "/nonexistent/cc")
    report = json.loads(CliRunner().invoke(info_command, ["--json"]).output)
    assert report["backends"]["emulator"]["available"] is False
    assert "no C compiler" in report["backends"]["emulator"]["why"]
    with pytest.raises(BackendUnavailable, match="no C compiler"):
        resolve_backend("emulator", sdk=SdkInfo(), environ={})


def test_the_emulators_own_shims_are_recognised(tmp_path):
    result = CliRunner().invoke(main, ["emu", "shims", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert is_emulator_shim(tmp_path / "dpu-pkg-config") and is_emulator_shim(tmp_path / "dpu-upmem-dpurte-clang")
    info = detect_sdk(environ={}, path=str(tmp_path), rank_glob=str(tmp_path / "none*"))
    assert not info.installed and info.ignored_shims == [str(tmp_path / "dpu-pkg-config")]
    assert resolve_backend("auto", sdk=info, environ={})[0] == "emulator"


def test_auto_falls_back_when_the_dpu_compiler_cannot_run(tmp_path):
    """The public SDK's clang without libLLVM: auto says why and uses the emulator; by name, a clear error."""
    root = fake_sdk(tmp_path / "sdk", compiler=BROKEN_COMPILER)
    for ranks in (0, 2):  # with DPU ranks too: hw needs the compiler as well
        for r in range(ranks):
            (tmp_path / f"dpu_rank{r}").write_text("")
        info = detect_sdk(environ={"UPMEM_HOME": str(root)}, path="", rank_glob=str(tmp_path / "dpu_rank*"))
        assert info.installed
        name, reason = resolve_backend("auto", sdk=info, environ={})
        assert name == "emulator", reason
        assert "unusable (trial build failed (exit 127)" in reason and "libLLVM-12git.so" in reason
        for backend in ("hw", "simulator"):
            with pytest.raises(BackendUnavailable, match=f"backend '{backend}': .*cannot build DPU programs .*libLLVM"):
                resolve_backend(backend, sdk=info, environ={})


def test_auto_picks_the_simulator_after_a_working_trial_build(tmp_path):
    root = fake_sdk(tmp_path / "sdk")
    info = detect_sdk(environ={"UPMEM_HOME": str(root)}, path="", rank_glob=str(tmp_path / "none*"))
    assert resolve_backend("auto", sdk=info, environ={})[0] == "simulator"
    # exit 0 without writing the binary is not a working compiler
    silent = fake_sdk(tmp_path / "silent", compiler="#!/bin/sh\nexit 0\n")
    info = detect_sdk(environ={"UPMEM_HOME": str(silent)}, path="", rank_glob=str(tmp_path / "none*"))
    name, reason = resolve_backend("auto", sdk=info, environ={})
    assert name == "emulator" and "wrote no DPU binary" in reason


def test_sdk_older_than_2021_3_is_refused_and_unknown_versions_are_noted(tmp_path):
    old = fake_sdk(tmp_path / "old", version="2021.1.0")
    info = detect_sdk(environ={"UPMEM_HOME": str(old)}, path="", rank_glob=str(tmp_path / "none*"))
    name, reason = resolve_backend("auto", sdk=info, environ={})
    assert name == "emulator" and "2021.1.0 is older than 2021.3" in reason and "dpu_broadcast_to" in reason
    with pytest.raises(BackendUnavailable, match=r"older than 2021\.3"):
        resolve_backend("simulator", sdk=info, environ={})
    unknown = fake_sdk(tmp_path / "unknown", version="")
    info = detect_sdk(environ={"UPMEM_HOME": str(unknown)}, path="", rank_glob=str(tmp_path / "none*"))
    name, reason = resolve_backend("auto", sdk=info, environ={})
    assert name == "simulator" and "SDK version unknown; the host runtime needs >= 2021.3" in reason


def test_info_shows_why_an_installed_sdk_is_unusable(tmp_path, monkeypatch):
    root = fake_sdk(tmp_path / "sdk", compiler=BROKEN_COMPILER)
    monkeypatch.setenv("UPMEM_HOME", str(root))
    monkeypatch.delenv("UPDLRM_BACKEND", raising=False)
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert "usable         no: trial build failed (exit 127)" in result.output
    assert "auto       ->   emulator" in result.output
