"""Facts about the machine this process runs on: its CPU's features, model and cores, and whether
a target's code runs on it natively."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once (Linux topology; else the CPU count)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


# Yields an idle TVM worker spins before it sleeps. TVM's default, 300,000, kept a core busy for
# ~150 ms after every parallel call on this VM; 20,000 is ~12 ms here.
POOL_SPIN_YIELDS = 20_000


def configure_thread_pool() -> None:
    """TVM's thread pool, unless the environment already says otherwise. Must run before the first
    kernel call: the pool reads the environment once.
    - One thread per physical core (TVM_NUM_THREADS): TVM's own default halves the logical CPU count
      on x86 (it assumes SMT), which on a VM whose vCPUs are separate cores ran every parallel
      kernel on half of them.
    - Idle workers spin POOL_SPIN_YIELDS yields, then sleep (TVM_THREAD_POOL_SPIN_COUNT). A decode
      step's calls come microseconds apart, so the spin still bridges them; TVM's default went on
      spinning ~150 ms after the last call, a core taken from whatever ran next (the application,
      a phone's battery; in `bench`, torch SDPA after our attention decode ran 5-10x slower)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(POOL_SPIN_YIELDS))


def cpuinfo(keys: tuple[str, ...]) -> list[str]:
    """Values of the /proc/cpuinfo lines with these keys (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    values = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            values.append(value.strip())
    return values


def cpu_features() -> set[str]:
    return {flag for value in cpuinfo(("flags", "Features")) for flag in value.split()}


def cpu_model() -> str:
    """The CPU's model name as the OS reports it ("" when it does not)."""
    return next(iter(cpuinfo(("model name",))), "")


def native_ok(target: dict[str, Any]) -> tuple[bool, str]:
    """Can this machine run the target's code directly? (ok, reason when not)"""
    if platform.machine() != target["isa"]:
        return False, f"this machine is {platform.machine()}, the library is {target['isa']}"
    missing = sorted(set(target.get("cpu_features", ())) - cpu_features())
    if missing:
        return False, f"this CPU lacks {', '.join(missing)}"
    return True, ""



def missing_emulator(emulator: str) -> str:
    """What to say when an emulator this machine needs is not installed."""
    return f"{emulator} is not installed (Debian: apt-get install qemu-user)"
