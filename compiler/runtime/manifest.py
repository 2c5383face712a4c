"""Reading a build's manifest.json (the contract between build and loader) and checking its artifacts."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from compiler.runtime.errors import LoaderError

SCHEMA_VERSION = 1


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise LoaderError(f"no manifest.json in {directory} (build it with: python -m compiler build)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise LoaderError(f"{path} is not valid JSON: {err}") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise LoaderError(f"{path} has schema version {manifest.get('schema_version')!r}; "
                          f"this loader reads version {SCHEMA_VERSION}")
    for name, digest in manifest["artifacts"].items():
        artifact = directory / name
        if not artifact.is_file():
            raise LoaderError(f"artifact {artifact} named in the manifest is missing")
        if sha256_of(artifact) != digest:
            raise LoaderError(f"artifact {artifact} does not match the sha256 in the manifest; refusing to load it")
    return manifest

