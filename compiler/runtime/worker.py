"""The emulated driver's worker: run under qemu-user by a CPython of the library's ISA, it loads the
library with the native driver and answers calls over its stdin/stdout (pickled messages).

    qemu-aarch64 python3.11 compiler/runtime/worker.py --serve LIBRARY
"""

import os
import platform
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a file: make the package importable, after the ISA's own site
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from compiler.runtime.drivers.emulated import receive, send  # noqa: E402
from compiler.runtime.drivers.native import NativeDriver  # noqa: E402


def serve(library: str) -> None:
    """Worker loop: the protocol owns stdout; anything else printed goes to stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    driver = NativeDriver(Path(library))
    kept = []  # weight templates the caller bound (BoundKernel), by index
    while True:
        message = receive(requests)
        if message is None or message[0] == "exit":
            return
        if message[0] == "ping":
            send(channel, ("ok", platform.machine()))
            continue
        try:
            if message[0] == "keep":
                kept.append(driver.keep(*message[1:]))
                result = len(kept) - 1
            elif message[0] == "call_kept":
                _, name, index, slots, inputs, out_specs = message
                result = driver.call_kept(name, kept[index], slots, inputs, out_specs)
            else:
                result = driver.call(*message[1:])
            send(channel, ("ok", result))
        except Exception as err:  # noqa: BLE001 - reported to the caller, worker stays up
            send(channel, ("error", f"{type(err).__name__}: {err}"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        sys.exit("usage: python worker.py --serve LIBRARY")
