"""Versions of one model in a TF Serving directory, loaded and hot-swapped.

Mirrors TF Serving's default "latest version" policy: the newest valid
integer version directory under the base path is served; a new version is
loaded completely before it replaces the old one, so requests in flight
finish on the version they started with. Each version runs in its own
graph and ``tf.compat.v1.Session``, as in TF Serving, so a request's deadline
cancels its graph run (``RunOptions.timeout_in_ms``). Directories without
``saved_model.pb`` (still being copied) are not candidates; a version that
fails to load is remembered and skipped until its files change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from serving.request_checks import InputSpec
from serving.tf_serving_ops import register_tf_serving_ops

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Signature:
    """One serving signature of a loaded version, run in its Session as TF Serving does."""

    name: str
    inputs: Dict[str, InputSpec]
    outputs: Tuple[str, ...]
    _session: tf.compat.v1.Session
    _feeds: Dict[str, str]
    _fetches: Dict[str, str]

    def run(
        self,
        arrays: Mapping[str, np.ndarray],
        output_names: Optional[Sequence[str]] = None,
        timeout_ms: Optional[int] = None,
    ) -> Dict[str, np.ndarray]:
        """Runs the signature on ``arrays`` (one per input); ``timeout_ms`` cancels
        it server-side (``tf.errors.DeadlineExceededError``) when it runs longer."""
        fetches = {name: self._fetches[name] for name in (output_names or self.outputs)}
        options = (
            tf.compat.v1.RunOptions(timeout_in_ms=max(1, int(timeout_ms))) if timeout_ms else None
        )
        return self._session.run(
            fetches, {self._feeds[n]: v for n, v in arrays.items()}, options=options
        )

    def __call__(self, **arrays: np.ndarray) -> Dict[str, np.ndarray]:
        return self.run(arrays)


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One loaded SavedModel version: its Session and its signatures."""

    version: int
    path: str
    session: tf.compat.v1.Session
    signatures: Dict[str, Signature]
    signature_defs: Dict[str, meta_graph_pb2.SignatureDef]


def _fingerprint(path: str) -> Tuple[float, int]:
    pb = os.path.join(path, "saved_model.pb")
    stat = os.stat(pb)
    return stat.st_mtime, stat.st_size


def _input_spec(info: meta_graph_pb2.TensorInfo) -> Optional[InputSpec]:
    if info.WhichOneof("encoding") != "name":
        return None  # sparse or composite inputs cannot come in a PredictRequest
    return InputSpec.from_tensor_info(info)


def _signature(
    name: str, signature_def: meta_graph_pb2.SignatureDef, session: tf.compat.v1.Session
) -> Optional[Signature]:
    specs = {key: _input_spec(info) for key, info in signature_def.inputs.items()}
    if None in specs.values() or any(
        info.WhichOneof("encoding") != "name" for info in signature_def.outputs.values()
    ):
        log.warning("signature %s has sparse or composite tensors; not served", name)
        return None
    return Signature(
        name,
        specs,
        tuple(sorted(signature_def.outputs)),
        session,
        {key: info.name for key, info in signature_def.inputs.items()},
        {key: info.name for key, info in signature_def.outputs.items()},
    )


def load_version(path: str, version: int) -> LoadedVersion:
    """Loads a SavedModel directory into its own graph and Session, as TF
    Serving does (raises on a corrupt one, or one whose ops this TensorFlow
    lacks)."""
    register_tf_serving_ops()
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    try:
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, [tf.saved_model.SERVING], path
            )
    except Exception:
        session.close()
        raise
    signature_defs = {
        name: meta_graph.signature_def[name]
        for name in meta_graph.signature_def
        if not name.startswith("__")
    }
    signatures = {
        name: sig
        for name, sig in ((n, _signature(n, d, session)) for n, d in signature_defs.items())
        if sig is not None
    }
    if not signatures:
        session.close()
        raise ValueError(f"{path} has no serving signatures")
    return LoadedVersion(version, path, session, signatures, signature_defs)


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
        versions = [
            int(n)
            for n in names
            if n.isdigit() and os.path.isfile(os.path.join(self.base_path, n, "saved_model.pb"))
        ]
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
                    log.error(
                        "model %s version %d at %s failed to load: %s", self.name, version, path, e
                    )
                    self._failed[version] = (fingerprint, f"{type(e).__name__}: {e}")
                    continue
                self._failed.pop(version, None)
                previous, self._current = self._current, loaded
                log.info(
                    "model %s: serving version %d%s",
                    self.name,
                    version,
                    f" (was {previous.version})" if previous else "",
                )
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
