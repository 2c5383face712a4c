"""The autotuner's device route: a TVM RPC tracker and an aarch64 RPC server under qemu on loopback,
or our RPC server timing Vulkan shaders on lavapipe or Hexagon runners under qemu-hexagon.
Candidates are compiled here and measured on the "device"; the records then drive a build whose
kernels match numpy there."""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path

import pytest
from conftest import assert_matches, require_emulator

import targets
from compiler import backends, build, cli, runtime
from compiler.tuning import rpc
from compiler.tuning import search
from compiler.tuning import database as tuning_db
from compiler.specs import make_spec


@pytest.fixture(scope="module")
def device():
    require_emulator("aarch64")
    with rpc.EmulatedDevice("aarch64") as dev:
        yield dev


@pytest.fixture(scope="module")
def vulkan_device():
    require_emulator("spirv")
    with rpc.EmulatedDevice("vulkan") as dev:
        yield dev


@pytest.fixture(scope="module")
def hexagon_device():
    require_emulator("hexagon")
    with rpc.EmulatedDevice("hexagon") as dev:
        yield dev


@pytest.mark.emulated
def test_tune_arm_over_rpc_then_build_uses_the_records(device, tmp_path):
    target = targets.get("arm")
    spec = make_spec("qgemm_w8a8", n=64, k=128)
    assert "emulated" in device.key
    lines = []
    run = search.tune([spec], target, device=device.key, logs_root=tmp_path / "logs", trials=4,
                    tracker=device.tracker, rpc_timeout=120, progress=lines.append)
    assert run.directory.name == device.key  # emulated timings are labelled as such
    assert sum(t.trials - t.failures for t in run.tasks) >= 2
    assert len((run.directory / tuning_db.RECORDS).read_text().splitlines()) >= 2

    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=run.directory,
                progress=lines.append)
    variants = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"]
    # a variant has a record where any of its tasks (one per layout choice) measured a candidate
    assert [v["tuning"] != "default" for v in variants] == [
        any(t.trials > t.failures for t in run.tasks if t.bucket == v["bucket"]) for v in variants]
    with runtime.load(out, emulate=True) as lib:
        for m in (1, 6):
            assert_matches(lib[spec.name], {"M": m}, seed=m)


@pytest.mark.emulated
def test_a_candidate_that_times_out_is_recorded_failed_and_the_search_goes_on(device, tmp_path):
    # A 512-position prefill of 2 GFLOP takes many seconds under qemu: a 1 s session limit kills it.
    spec = make_spec("attention_prefill", hq=32, hkv=8, d=128)
    lines = []
    run = search.tune([spec], targets.get("arm"), device=device.key, logs_root=tmp_path, trials=4,
                    tracker=device.tracker, rpc_timeout=1, progress=lines.append)
    assert sum(t.failures for t in run.tasks) >= 1
    assert any("failed" in line for line in lines)


@pytest.mark.emulated
def test_tune_vulkan_over_rpc_then_build_uses_the_records(vulkan_device, tmp_path):
    """The Vulkan candidates' shaders travel to `python -m compiler rpc-server`, which times them
    through the loader's dispatcher; the device line says lavapipe's timings are emulated."""
    target = targets.get("vulkan-adreno")
    spec = make_spec("qgemm_w4a16", n=64, k=256, group=64, min=True)
    lines = []
    run = search.tune([spec], target, device=vulkan_device.key, logs_root=tmp_path / "logs", trials=8,
                    tracker=vulkan_device.tracker, rpc_timeout=120, progress=lines.append)
    assert any("EMULATED" in line and "llvmpipe" in line for line in lines)
    assert all(task.trials > task.failures for task in run.tasks), lines
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=None, tuning_dir=run.directory, progress=lines.append)
    variants = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"]
    assert all(v["tuning"] != "default" for v in variants)
    with runtime.load(out) as lib:
        for m in (1, 5):
            assert_matches(lib[spec.name], {"M": m}, seed=m)


@pytest.mark.emulated
def test_tune_hexagon_over_rpc_then_build_uses_the_records(hexagon_device, tmp_path):
    """Each candidate is linked into its own runner, which the device times inside itself (under
    qemu-hexagon here, said to be emulated); the build replays the records and matches numpy."""
    target = targets.get("hexagon")
    spec = make_spec("qgemm_w4a8", n=64, k=256, group=32)
    lines = []
    run = search.tune([spec], target, device=hexagon_device.key, logs_root=tmp_path / "logs", trials=6,
                    tracker=hexagon_device.tracker, rpc_timeout=120, progress=lines.append)
    assert any("EMULATED" in line and "qemu-hexagon" in line for line in lines)
    assert all(task.trials > task.failures and task.best_secs > 0 for task in run.tasks), lines
    out = tmp_path / "lib"
    build.build([spec], target, out, toolchain=backends.toolchain_for(target), tuning_dir=run.directory,
                progress=lines.append)
    variants = json.loads((out / "manifest.json").read_text())["kernels"][spec.name]["variants"]
    assert all(v["tuning"] != "default" for v in variants)
    with runtime.load(out, emulate=True) as lib:
        for m in (1, 5):
            assert_matches(lib[spec.name], {"M": m}, seed=m)


@pytest.mark.emulated
def test_vulkan_tuning_refuses_a_stock_tvm_server(vulkan_device):
    from tvm import rpc as tvm_rpc

    tracker = vulkan_device.tracker
    port = rpc._free_port()
    server = tvm_rpc.Server(host="127.0.0.1", port=port, port_end=port + 50, key="stock-phone", silent=True,
                            tracker_addr=(tracker.host, tracker.port))
    try:
        stock = rpc.Tracker(tracker.host, tracker.port, "stock-phone")
        for _ in range(50):  # registration takes a moment
            if stock.summary().get("queue_info", {}).get("stock-phone", {}).get("free", 0):
                break
            time.sleep(0.2)
        with pytest.raises(rpc.RpcError, match="stock RPC server.*compiler rpc-server"):
            search.tune([make_spec("qgemm_w4a16", n=64, k=256, group=64)], targets.get("vulkan"), device="stock",
                      logs_root=Path(tempfile.mkdtemp()), trials=2, tracker=stock, progress=lambda _: None)
    finally:
        server.terminate()


@pytest.mark.emulated
def test_unknown_key_names_the_registered_ones(device):
    with pytest.raises(rpc.RpcError, match=f"no device is registered with key 'phone'.*{device.key}"):
        rpc.Tracker(device.tracker.host, device.tracker.port, "phone").devices()


@pytest.mark.unit
def test_unreachable_tracker_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: nothing answers
        assert cli.main(["tune", "--target", "arm", "--ops", "qgemm_w8a8", "--rpc-tracker", f"127.0.0.1:{port}",
                         "--rpc-key", "phone"]) == 2
    assert "cannot reach the RPC tracker" in capsys.readouterr().err


@pytest.mark.unit
def test_foreign_target_without_a_device_points_at_rpc(capsys):
    """Hexagon has no core model: without a device, tuning it points at RPC (ARM targets are
    modelled on their default core instead: test_tune_modelled.py)."""
    assert cli.main(["tune", "--target", "hexagon", "--ops", "qgemm_w8a8"]) == 2
    assert "--rpc-tracker" in capsys.readouterr().err
