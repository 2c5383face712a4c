"""Run under qemu-user with the block-counting plugin (by cycle_model.counts): load a library with
the native driver, call one kernel once, and write where the kernel's entry point was loaded, so
the host can map the plugin's guest addresses back to the library's.

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
        request = pickle.load(f)
    driver = NativeDriver(Path(request["library"]))
    entry = ctypes.CDLL(request["library"])[f"__tvm_ffi_{request['symbol']}"]
    driver.call(request["symbol"], request["inputs"], request["out_specs"])
    with open(result_path, "wb") as f:
        pickle.dump({"entry_address": ctypes.cast(entry, ctypes.c_void_p).value}, f)


if __name__ == "__main__":
    probe(sys.argv[1], sys.argv[2])
