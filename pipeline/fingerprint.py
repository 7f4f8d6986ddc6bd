"""Content fingerprints that make TFX's cache notice changed code or schema.

TFX caches a component on its inputs and execution properties. Module paths
such as ``trainer.task.run_fn`` and a schema file path stay the same when
the code or the schema text changes, so the pipeline passes these
fingerprints as properties: an edit re-runs what depends on it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Iterable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_fingerprint(packages: Iterable[str]) -> str:
    """SHA-256 (16 hex digits) over the .py files of the given project packages."""
    digest = hashlib.sha256()
    for package in sorted(packages):
        base = os.path.join(_ROOT, package)
        for root, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, _ROOT).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def file_fingerprint(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def content_addressed_copy(path: str, directory: str) -> str:
    """Copies ``path`` to ``<directory>/<sha>/<name>`` (once) and returns the copy."""
    target_dir = os.path.join(directory, file_fingerprint(path))
    target = os.path.join(target_dir, os.path.basename(path))
    if not os.path.exists(target):
        os.makedirs(target_dir, exist_ok=True)
        tmp = target + ".tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    return target
