"""Run under qemu-user with the block-counting plugin (by cycle_model.counts): for each requested call, load its library with
the native driver and call its kernel once; then write where each kernel's entry point was loaded,
so the host can map the plugin's guest addresses back to each library's.

    qemu-aarch64 -plugin libekc_block_counts.so,out=COUNTS python3.11 probe.py REQUEST RESULT
"""

import ctypes
import pickle
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a file: make the package importable, after the ISA's own site
    sys.path.append(str(Path(__file__).resolve().parents[4]))

from compiler.runtime.drivers.native import NativeDriver  # noqa: E402


def probe(request_path: str, result_path: str) -> None:
    with open(request_path, "rb") as f:
        calls = pickle.load(f)
    entry_addresses = []
    for call in calls:
        driver = NativeDriver(Path(call["library"]))
        entry = ctypes.CDLL(call["library"])[f"__tvm_ffi_{call['symbol']}"]
        driver.call(call["symbol"], call["inputs"], call["out_specs"])
        entry_addresses.append(ctypes.cast(entry, ctypes.c_void_p).value)
    with open(result_path, "wb") as f:
        pickle.dump({"entry_addresses": entry_addresses}, f)


if __name__ == "__main__":
    probe(sys.argv[1], sys.argv[2])
