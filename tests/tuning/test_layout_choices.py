"""Every structural alternative the tuner may choose (schedules.layout_choices: GEMM row tiles,
attention KV tiles, query rows, decode split lengths) builds and matches numpy on the instruction
set. Each is put through the real pipeline: a tuning record of its default schedule makes it the
variant's fastest layout, `build` takes it (the manifest names it), and the kernel is checked at
lengths on both sides of every bucket and tile edge."""

from __future__ import annotations

import json

import pytest
from conftest import assert_matches, require_emulator

import schedules
import targets
from compiler import backends, build, runtime
from compiler.specs import make_spec
from compiler.tuning import database as tuning_db
from compiler.tuning.tasks import make_task

SPECS = [
    make_spec("qgemm_w8a8", n=64, k=128),
    make_spec("qgemm_w4a8", n=64, k=128, group=32, act="q8_1", min=True, norm=1e-5),
    make_spec("qgemm_w4a16", n=64, k=128, group=32, min=True),
    make_spec("qgemm_gguf", n=48, k=256, type="Q6_K", bias=True),
    make_spec("qkv_proj", hq=9, hkv=3, d=64, k=128, quant="w4a8", group=32, act="q8_1", min=True,
              rope_theta=100000.0, norm=1e-5),
    make_spec("attention_prefill", hq=8, hkv=2, d=64),
    make_spec("attention_prefill", hq=4, hkv=2, d=64, kv="int8"),
    make_spec("attention_decode", hq=8, hkv=2, d=64),
]
# Lengths per op: padded row tiles (M not a multiple of 8), prefixes, both length buckets, splits.
SIZES = {"qgemm": [{"M": 1}, {"M": 3}, {"M": 13}], "qkv_proj": [{"M": 1}, {"M": 11}],
         "attention_prefill": [{"S": 1, "L": 1}, {"S": 37, "L": 90}, {"S": 300, "L": 300}],
         "attention_decode": [{"L": 1}, {"L": 200}, {"L": 700}]}


def _prefer(database, spec, target, bucket, layout) -> None:
    """A record of `layout`'s default schedule, faster than any measurement: build must choose it."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    task = make_task(spec, target, bucket, layout)
    sch = s_tir.Schedule(task.mod)
    schedules.schedule(sch, spec, target, bucket, layout)
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(task.mod), [tvm.runtime.const(1e-9, "float32")], target.tvm_target(),
        ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])))


def _check_alternatives(target, choice: int, tmp_path, specs=SPECS) -> None:
    database = tuning_db.open_database(tmp_path / "db")
    expected = {}
    for spec in specs:
        for bucket in schedules.buckets(spec, target):
            choices = schedules.layout_choices(spec, target, bucket)
            if choice < len(choices):
                _prefer(database, spec, target, bucket, choices[choice])
                expected[(spec.name, str(bucket))] = schedules.layout_tag(choices[choice], choices[0])
    out = tmp_path / "lib"
    build.build(specs, target, out, toolchain=backends.toolchain_for(target), tuning_dir=tmp_path / "db",
                progress=lambda _: None)
    kernels = json.loads((out / "manifest.json").read_text())["kernels"]
    chosen = {(name, str(v["bucket"])): v["tuning"]["layout"] for name, entry in kernels.items()
              for v in entry["variants"] if v["tuning"] != "default"}
    assert chosen == expected
    with runtime.load(out) as lib:
        for spec in specs:
            for seed, sizes in enumerate(SIZES["qgemm" if spec.op.startswith("qgemm") else spec.op]):
                assert_matches(lib[spec.name], sizes, seed=seed)


def _check_every_choice(target, tmp_path, specs=SPECS) -> None:
    most = max(len(schedules.layout_choices(spec, target, bucket))
               for spec in specs for bucket in schedules.buckets(spec, target))
    assert most > 2, f"{target.name}: no layout choices to check"
    for choice in range(1, most):
        _check_alternatives(target, choice, tmp_path / str(choice), specs)


@pytest.mark.native
def test_every_layout_choice_matches_numpy_on_x86(tmp_path):
    _check_every_choice(targets.get("x86"), tmp_path)


@pytest.mark.emulated
def test_every_layout_choice_matches_numpy_on_arm(tmp_path):
    """The kernels whose ARM choices differ from x86's (SDOT row tiles, the q8 path's unpacked or
    packed weights, keys-in-lanes attention); the float GEMMs' row tiles are the x86 test's."""
    require_emulator("aarch64")
    _check_every_choice(targets.get("arm"), tmp_path, [SPECS[0], SPECS[1], SPECS[4], SPECS[5], SPECS[7]])


@pytest.mark.emulated
def test_every_layout_choice_matches_numpy_on_hexagon(tmp_path):
    """Hexagon is tuned over RPC (its runner under qemu-hexagon, or a device): the same choices, on
    one kernel of each schedule (the emulator is slow)."""
    require_emulator("hexagon")
    _check_every_choice(targets.get("hexagon"), tmp_path, [SPECS[0], SPECS[2], SPECS[5], SPECS[7]])
