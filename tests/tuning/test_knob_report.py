"""Knobs as data: every variant's knobs with their candidates and default, and the value its
tuning record chose, the same values `build` records in the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

import targets
from compiler import build
from compiler.specs import make_spec
from compiler.tuning import database, search
from compiler.tuning.knob_report import knob_rows

pytestmark = pytest.mark.unit

RECORDING = Path(__file__).with_name("recordings") / "x86-qgemm_w8a8.json"


def test_knob_rows_show_defaults_and_the_records_choices(tmp_path):
    target = targets.get("x86")
    spec = make_spec("qgemm_w8a8", n=64, k=128)
    run = search.tune([spec], target, device="replayed", logs_root=tmp_path, trials=64, replay=RECORDING,
                      progress=lambda _: None)
    records = database.open_database(run.directory)
    rows = knob_rows([spec], target, records)
    assert {r.variant for r in rows} == {f"{spec.name}__m1", spec.name}
    assert {r.name for r in rows} == {"n_block", "unroll", "m_tile"}
    structural = [r for r in rows if r.name == "m_tile"]  # the outer space: the any-length GEMM's row tile
    assert [(r.variant, r.candidates, r.default) for r in structural] == [(spec.name, (4, 2, 8), 4)]
    for row in rows:
        assert row.default in row.candidates and row.tuned in row.candidates
    for bucket, symbol in (({"M": 1}, f"{spec.name}__m1"), ({}, spec.name)):
        _, tuned_knobs, tuning, layout = build.lower_kernel(spec, target, bucket, records)
        _, default_knobs, _, _ = build.lower_kernel(spec, target, bucket, layout=layout)  # that layout's defaults
        assert tuning != "default"
        assert {r.name: r.default for r in rows if r.variant == symbol and r.name != "m_tile"} == default_knobs
        assert {r.name: r.tuned for r in rows if r.variant == symbol and r.name != "m_tile"} == tuned_knobs
    assert structural[0].tuned == build.lower_kernel(spec, target, {}, records)[3].m_tile
    assert all(r.tuned is None for r in knob_rows([spec], target, None))
