"""The block-counting TCG plugin (block_counts.c), built against the qemu-plugin.h of the installed
qemu-user's own Debian source, and cached per qemu version under the per-user cache.

Debian's qemu-user loads plugins but ships none and no header: `apt-get source --download-only
qemu` fetches the source (apt needs deb-src entries: README's test command adds them), and the
plugin is one C file compiled with gcc and glib's headers (libglib2.0-dev)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from compiler.backends.native.cycle_model.mca import ModelError
from compiler.runtime.paths import cache_dir, cache_lock

SOURCE = Path(__file__).with_name("block_counts.c")


def qemu_version(emulator: str) -> str:
    """The Debian version of the installed qemu-user ("1:7.2+dfsg-7+deb12u18+b3")."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "qemu-user"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout:
        raise ModelError(f"cannot tell which qemu-user provides {emulator} (dpkg-query failed: {proc.stderr.strip()})")
    return proc.stdout.strip()


def plugin_path(emulator: str) -> Path:
    """The built plugin for this qemu version, building it (once) when missing."""
    version = qemu_version(emulator)
    folder = cache_dir() / "qemu-plugin" / re.sub(r"[^A-Za-z0-9.+-]", "_", version)
    plugin = folder / "libekc_block_counts.so"
    if _fresh(plugin):
        return plugin
    with cache_lock(f"qemu-plugin-{folder.name}"):
        if not _fresh(plugin):  # or another process built it while this one waited
            folder.mkdir(parents=True, exist_ok=True)
            header = _plugin_header(folder)
            _compile(header.parent, plugin)
    return plugin


def _fresh(plugin: Path) -> bool:
    return plugin.is_file() and plugin.stat().st_mtime >= SOURCE.stat().st_mtime


def _plugin_header(folder: Path) -> Path:
    header = folder / "include" / "qemu-plugin.h"
    if header.is_file():
        return header
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["apt-get", "source", "--download-only", "qemu"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("qemu_*.orig.tar.*"))
        if proc.returncode != 0 or not tarballs:
            raise ModelError("the cycle model's qemu plugin needs qemu's Debian source for its plugin header: "
                             "`apt-get source --download-only qemu` failed (enable deb-src entries in "
                             f"/etc/apt/sources.list.d/, then apt-get update): {proc.stderr.strip()[-500:]}")
        with tarfile.open(tarballs[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("include/qemu/qemu-plugin.h")), None)
            if member is None:
                raise ModelError(f"{tarballs[0].name} has no include/qemu/qemu-plugin.h")
            header.parent.mkdir(parents=True, exist_ok=True)
            header.write_bytes(tar.extractfile(member).read())
    return header


def _compile(include: Path, plugin: Path) -> None:
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        raise ModelError("building the qemu plugin needs gcc and pkg-config (apt-get install build-essential pkg-config)")
    glib = subprocess.run(["pkg-config", "--cflags", "--libs", "glib-2.0"], capture_output=True, text=True)
    if glib.returncode != 0:
        raise ModelError("building the qemu plugin needs glib's headers (apt-get install libglib2.0-dev)")
    staged = plugin.with_suffix(".tmp")
    proc = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{include}", str(SOURCE), *glib.stdout.split(),
                           "-o", str(staged)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"building the qemu plugin failed: {proc.stderr.strip()[-2000:]}")
    staged.replace(plugin)
