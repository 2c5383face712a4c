"""Reading a build's manifest.json (the contract between build and loader) and checking its artifacts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from compiler.runtime.errors import LoaderError

SCHEMA_VERSION = 2  # 2: the target names its backend; every variant records its layout


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


REQUIRED = ("target", "kernels", "artifacts")  # `library` may be null: a Vulkan build's artifacts are shaders
ENTRY_POINTS = ("library", "runner")  # what a driver opens: each must name a checked artifact


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The build's manifest, refused unless every file a driver may open is an artifact inside the
    build folder whose sha256 matches: the manifest must not point the loader at any other file."""
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise LoaderError(f"no manifest.json in {directory} (build it with: python -m compiler build)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise LoaderError(f"{path} is not valid JSON: {err}") from None
    except RecursionError:
        raise LoaderError(f"{path} nests JSON too deeply to be a manifest") from None
    if not isinstance(manifest, dict):
        raise LoaderError(f"{path} is not a JSON object (it is a {type(manifest).__name__})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise LoaderError(f"{path} has schema version {manifest.get('schema_version')!r}; "
                          f"this loader reads version {SCHEMA_VERSION}")
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise LoaderError(f"{path} lacks {', '.join(repr(k) for k in missing)}")
    _check_artifacts(directory, path, manifest["artifacts"])
    _check_target(path, manifest["target"])
    _check_kernels(path, manifest["kernels"])
    for key in ENTRY_POINTS:
        name = manifest.get(key)
        if name is not None and (not isinstance(name, str) or name not in manifest["artifacts"]):
            raise LoaderError(f"{path}: {key!r} names {name!r}, which is not one of its artifacts; refusing to load it")
    return manifest


def _check_target(path: Path, target: Any) -> None:
    if not isinstance(target, dict) or not all(isinstance(target.get(k), str) for k in ("name", "backend", "isa")):
        raise LoaderError(f"{path}: 'target' must be an object naming the target's name, backend and isa")
    features = target.get("cpu_features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise LoaderError(f"{path}: the target's 'cpu_features' must be a list of CPU flag names")


_ROLES = ("input", "weight", "output")
_DTYPE_KINDS = "iuf"  # the kernels take integer and float arrays only


def _check_kernels(path: Path, kernels: Any) -> None:
    """The shape of every kernel entry the loader reads, so a damaged manifest is one clear error
    here rather than a KeyError or TypeError at the first call."""
    if not isinstance(kernels, dict):
        raise LoaderError(f"{path}: 'kernels' must map each kernel's name to its entry")
    for name, entry in kernels.items():
        where = f"{path}: kernel {name!r}"
        if not isinstance(entry, dict):
            raise LoaderError(f"{where} is not an object")
        args, variants = entry.get("args"), entry.get("variants")
        if not isinstance(args, list) or not args:
            raise LoaderError(f"{where} lists no 'args'")
        for arg in args:
            _check_argument(where, arg)
        at_least = entry.get("dims_at_least", {})
        if not isinstance(at_least, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in at_least.items()):
            raise LoaderError(f"{where}: 'dims_at_least' must map runtime dim names to dim names")
        if not isinstance(variants, list) or not variants or not all(
                isinstance(v, dict) and isinstance(v.get("symbol"), str) and isinstance(v.get("bucket"), dict)
                for v in variants):
            raise LoaderError(f"{where}: 'variants' must be a list of objects with a 'symbol' and a 'bucket'")


def _check_argument(where: str, arg: Any) -> None:
    if not isinstance(arg, dict) or not isinstance(arg.get("name"), str):
        raise LoaderError(f"{where}: an argument is not an object with a 'name'")
    label = f"{where} argument {arg['name']!r}"
    if arg.get("role") not in _ROLES:
        raise LoaderError(f"{label}: 'role' must be one of {', '.join(_ROLES)}")
    for key in ("dtype", "logical_dtype"):
        if key in arg or key == "dtype":
            _check_dtype(label, key, arg.get(key))
    for key in ("shape", "logical_shape"):
        shape = arg.get(key, [] if key == "logical_shape" else None)
        if not isinstance(shape, list) or not all(
                isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape):
            raise LoaderError(f"{label}: {key!r} must list sizes (whole numbers) or runtime dim names")
    steps = arg.get("pack", [])
    if not isinstance(steps, list) or not all(isinstance(s, dict) and isinstance(s.get("op"), str) for s in steps):
        raise LoaderError(f"{label}: 'pack' must be a list of steps, each an object naming its 'op'")


def _check_dtype(label: str, key: str, dtype: Any) -> None:
    try:
        kind = np.dtype(dtype).kind if isinstance(dtype, str) else None
    except TypeError:
        kind = None
    if kind is None or kind not in _DTYPE_KINDS:
        raise LoaderError(f"{label}: {key} {dtype!r} is not an integer or float dtype")


def _check_artifacts(directory: Path, path: Path, artifacts: Any) -> None:
    """Every artifact is a file inside the build folder (after symlinks) with its recorded sha256."""
    if not isinstance(artifacts, dict) or not artifacts:
        raise LoaderError(f"{path}: 'artifacts' must map each artifact's file name to its sha256; "
                          f"it is {artifacts!r}")
    for name, digest in artifacts.items():
        artifact = _inside(directory, name, path)
        if not artifact.is_file():
            raise LoaderError(f"artifact {directory / name} named in the manifest is missing")
        if sha256_of(artifact) != digest:
            raise LoaderError(f"artifact {directory / name} does not match the sha256 in the manifest; "
                              "refusing to load it")


def _inside(directory: Path, name: Any, path: Path) -> Path:
    """`directory / name` resolved, refused when `name` is absolute, has a '..' component, or leads
    (through symlinks) out of the build folder."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise LoaderError(f"{path}: artifact name {name!r} must be a relative path inside the build folder")
    resolved = (directory / name).resolve()
    if not resolved.is_relative_to(directory.resolve()):
        raise LoaderError(f"{path}: artifact {name!r} resolves to {resolved}, outside the build folder "
                          f"{directory.resolve()}; refusing to load it")
    return resolved


def artifact_path(directory: Path, manifest: dict[str, Any], key: str) -> Path:
    """The checked file the manifest's `key` ('library', 'runner') names: what a driver opens."""
    name = manifest.get(key)
    if name is None:
        raise LoaderError(f"{directory}: the manifest names no {key} (a build for another backend?)")
    return checked_artifact(directory, manifest, name)


def checked_artifact(directory: Path, manifest: dict[str, Any], name: str) -> Path:
    """`directory / name` resolved, when `name` is one of the artifacts read_manifest checked."""
    if not isinstance(name, str) or name not in manifest.get("artifacts", {}):
        raise LoaderError(f"{directory}: {name!r} is not one of the manifest's artifacts; refusing to open it")
    return _inside(directory, name, directory / "manifest.json")


def shader_path(directory: Path, manifest: dict[str, Any], shader: str) -> Path:
    """The SPIR-V file of a launch's `shader`. A loaded build's manifest has an artifacts table
    (read_manifest requires one): the file must be one of its checked artifacts. A tuning
    candidate's (the tuner made the folder, nothing is hashed) must still be inside its folder."""
    name = f"shaders/{shader}.spv"
    if "artifacts" in manifest:
        return checked_artifact(directory, manifest, name)
    return _inside(directory, name, directory / "plan.json")
