"""Re-make the recordings the replay tests search against (run by hand, on the x86 host):

    python tests/tuning/make_recordings.py

Each is a real search on this machine that measures every knob setting of the kernels below
(the spaces are small), written by `tune(..., record=...)`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import targets
from compiler.specs import make_spec
from compiler.tuning import database, search

RECORDINGS = Path(__file__).with_name("recordings")
SPECS = {
    "x86-qgemm_w8a8.json": [make_spec("qgemm_w8a8", n=64, k=128)],
    "x86-attention_decode.json": [make_spec("attention_decode", hq=4, hkv=2, d=64)],
}


def main() -> None:
    RECORDINGS.mkdir(exist_ok=True)
    for name, specs in SPECS.items():
        path = RECORDINGS / name
        path.unlink(missing_ok=True)
        target = targets.get("x86")
        with tempfile.TemporaryDirectory() as logs:
            search.tune(specs, target, device=database.host_device(target), logs_root=Path(logs), trials=128,
                        record=path, progress=lambda line: print(line, file=sys.stderr))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
