"""Prepare the userland that runs a foreign ISA's kernels under qemu-user on this machine.

The loader's emulated worker is a CPython of the target ISA with numpy, tvm_ffi and the TVM
runtime library: CPython and its C libraries come from Debian's packages for that architecture
(`apt-get download`, unpacked with `dpkg -x`, no chroot), the Python packages from PyPI's wheels
for that platform. The loader's worker path (`site/`) gets only `libtvm_runtime.so` from the TVM
wheel; the whole wheel goes to `rpc-site/`, for TVM's RPC server (compiler.tuning.rpc's emulated device).
Downloads are cached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import targets
from compiler.runtime.host import missing_emulator
from compiler.runtime.paths import cache_dir, cache_lock, sysroot_dir

DEBIAN_ARCH = {"aarch64": "arm64"}
PIP_PLATFORM = {"aarch64": "manylinux_2_28_aarch64"}
DEBIAN_PACKAGES = [
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1", "libstdc++6",
    "libexpat1", "zlib1g", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0", "libuuid1",
    "libcrypt1", "libtinfo6", "libncursesw6", "libreadline8",
]
WHEELS_WHOLE = ["numpy", "apache-tvm-ffi", "typing_extensions", "ml_dtypes", "psutil", "cloudpickle"]


class EmulatorSetupError(RuntimeError):
    pass


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise EmulatorSetupError(f"`{' '.join(cmd)}` failed:\n{(proc.stderr or proc.stdout).strip()[-3000:]}")
    return proc


def _wanted_versions() -> dict[str, str]:
    return {dist: metadata.version(dist) for dist in ("numpy", "apache-tvm-ffi", "apache-tvm", "psutil", "cloudpickle")}


def _ensure_foreign_arch(arch: str, progress) -> None:
    foreign = _run(["dpkg", "--print-foreign-architectures"]).stdout.split()
    if arch in foreign:
        return
    if os.geteuid() != 0:
        raise EmulatorSetupError(f"Debian architecture {arch} is not enabled; as root run: "
                                 f"dpkg --add-architecture {arch} && apt-get update")
    progress(f"enabling Debian architecture {arch} (dpkg --add-architecture, apt-get update)")
    _run(["dpkg", "--add-architecture", arch])
    _run(["apt-get", "update"])


def _download_debs(arch: str, dest: Path, progress) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [f"{p}:{arch}" for p in DEBIAN_PACKAGES]
    have = {p.name.split("_")[0] for p in dest.glob("*.deb")}
    missing = [w for w in wanted if w.split(":")[0] not in have]
    if missing:
        progress(f"downloading {len(missing)} Debian {arch} packages")
        try:
            _run(["apt-get", "download", *missing], cwd=dest)
        except EmulatorSetupError:
            if os.geteuid() != 0:
                raise
            _run(["apt-get", "update"])  # stale package lists are the usual cause
            _run(["apt-get", "download", *missing], cwd=dest)
    return sorted(dest.glob("*.deb"))


def _download_wheels(isa: str, versions: dict[str, str], dest: Path, progress) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{d}=={versions[d]}" if d in versions else d for d in (*WHEELS_WHOLE, "apache-tvm")]
    progress(f"downloading {PIP_PLATFORM[isa]} wheels: {', '.join(pins)}")
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
          "--only-binary=:all:", "--platform", PIP_PLATFORM[isa], "--python-version", "3.11", "--no-deps", *pins])
    return sorted(dest.glob("*.whl"))


def _extract_wheels(wheels: list[Path], site: Path, rpc_site: Path) -> None:
    runtime_dir = site / "tvm_runtime"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            if wheel.name.startswith("apache_tvm-"):
                # The loader's worker takes only the runtime (the compiler half is 240 MB it never
                # needs and ~10 s of import under qemu); the RPC server takes the whole package.
                with archive.open("tvm/lib/libtvm_runtime.so") as src, open(runtime_dir / "libtvm_runtime.so", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                archive.extractall(rpc_site)
            else:
                archive.extractall(site)


def setup_sysroot(isa: str = "aarch64", *, progress: Callable[[str], None] = print) -> Path:
    """Create (or reuse) the emulated userland for `isa`; returns its directory."""
    if isa not in DEBIAN_ARCH:
        raise EmulatorSetupError(f"no emulated userland recipe for {isa!r}; known: {', '.join(DEBIAN_ARCH)}")
    emulator = targets.emulator_for(isa)
    if shutil.which(emulator) is None:
        raise EmulatorSetupError(missing_emulator(emulator))
    dest = sysroot_dir(isa)
    versions = _wanted_versions()
    with cache_lock(f"sysroot-{isa}"):  # one process makes it; another waits, then finds it ready
        stamp = dest / "READY.json"
        if not (stamp.is_file() and json.loads(stamp.read_text()) == versions):
            _make_sysroot(isa, emulator, dest, versions, progress)
    progress(f"{isa} userland ready at {dest}")
    return dest


def _make_sysroot(isa: str, emulator: str, dest: Path, versions: dict[str, str], progress) -> None:
    downloads = cache_dir() / "downloads" / isa
    _ensure_foreign_arch(DEBIAN_ARCH[isa], progress)
    debs = _download_debs(DEBIAN_ARCH[isa], downloads / "debs", progress)
    for old in (downloads / "wheels").glob("*.whl"):
        old.unlink()  # versions may have changed; wheels are re-fetched from pip's own cache
    wheels = _download_wheels(isa, versions, downloads / "wheels", progress)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staging = Path(tmp) / isa
        progress(f"unpacking into {dest}")
        (staging / "root").mkdir(parents=True)
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(staging / "root")])
        _extract_wheels(wheels, staging / "site", staging / "rpc-site")
        _smoke_test(emulator, staging)
        (staging / "READY.json").write_text(json.dumps(versions))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)


def _smoke_test(emulator: str, root: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root / "site"),
           "QEMU_LD_PREFIX": str(root / "root")}
    code = "import platform, numpy, tvm_ffi; print(platform.machine())"
    proc = _run([emulator, str(root / "root" / "usr" / "bin" / "python3.11"), "-c", code], env=env, timeout=300)
    if not proc.stdout.strip():
        raise EmulatorSetupError("the emulated CPython printed nothing")
