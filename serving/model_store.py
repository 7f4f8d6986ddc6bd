"""Versions of one model in a TF Serving directory, loaded and hot-swapped.

Mirrors TF Serving's default "latest version" policy: the newest valid
integer version directory under the base path is served; a new version is
loaded completely before it replaces the old one, so requests in flight
finish on the version they started with. Directories without
``saved_model.pb`` (still being copied) are not candidates; a version that
fails to load is remembered and skipped until its files change.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Callable, Dict, List, Optional, Tuple

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One loaded SavedModel version with its callable signatures."""

    version: int
    path: str
    model: object
    signatures: Dict[str, Callable]
    signature_defs: Dict[str, meta_graph_pb2.SignatureDef]


def _fingerprint(path: str) -> Tuple[float, int]:
    pb = os.path.join(path, "saved_model.pb")
    stat = os.stat(pb)
    return stat.st_mtime, stat.st_size


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads a SavedModel directory (raises on a corrupt one)."""
    saved_model = loader_impl.parse_saved_model(path)
    signature_defs = dict(saved_model.meta_graphs[0].signature_def)
    model = tf.saved_model.load(path)
    signatures = dict(model.signatures)
    if not signatures:
        raise ValueError(f"{path} has no serving signatures")
    return LoadedVersion(version, path, model, signatures, signature_defs)


class ModelStore:
    """Keeps the newest valid version of a model loaded; polls for new ones."""

    def __init__(self, name: str, base_path: str, poll_seconds: float = 1.0):
        self.name, self.base_path, self.poll_seconds = name, base_path, poll_seconds
        self._current: Optional[LoadedVersion] = None
        self._failed: Dict[int, Tuple[Tuple[float, int], str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def current(self) -> Optional[LoadedVersion]:
        return self._current

    def failures(self) -> Dict[int, str]:
        """Version -> load error, for versions that could not be loaded."""
        return {v: err for v, (_, err) in self._failed.items()}

    def candidates(self) -> List[int]:
        """Integer version directories holding a saved_model.pb, newest first."""
        try:
            names = os.listdir(self.base_path)
        except FileNotFoundError:
            return []
        versions = [int(n) for n in names if n.isdigit()
                    and os.path.isfile(os.path.join(self.base_path, n, "saved_model.pb"))]
        return sorted(versions, reverse=True)

    def poll_once(self) -> Optional[LoadedVersion]:
        """Loads and swaps in the newest loadable version if it is not served yet."""
        with self._lock:
            for version in self.candidates():
                path = os.path.join(self.base_path, str(version))
                current = self._current
                if current is not None and current.version == version:
                    return current
                try:
                    fingerprint = _fingerprint(path)
                except OSError:
                    continue  # removed while we looked
                failed = self._failed.get(version)
                if failed and failed[0] == fingerprint:
                    continue
                try:
                    loaded = load_version(path, version)
                except Exception as e:  # a corrupt version must not stop serving
                    log.error("model %s version %d at %s failed to load: %s", self.name, version, path, e)
                    self._failed[version] = (fingerprint, f"{type(e).__name__}: {e}")
                    continue
                self._failed.pop(version, None)
                previous, self._current = self._current, loaded
                log.info("model %s: serving version %d%s", self.name, version,
                         f" (was {previous.version})" if previous else "")
                return loaded
            return self._current

    def start(self) -> None:
        """Loads what is there now, then polls in a background thread."""
        self.poll_once()
        self._thread = threading.Thread(target=self._run, name=f"poll-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # keep polling whatever happens
                log.exception("polling %s failed", self.base_path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
