"""Versions of one model in a TF Serving directory, loaded and hot-swapped.

Mirrors TF Serving's version policies (``model_config.VersionPolicy``; by
default the newest valid integer version directory under the base path): a
new version is loaded, and its warmup records replayed
(``warmup_replay``), completely before it is served and before an old one is
unloaded, so requests in flight finish on the version they started with.
Each version runs in its own graph and ``tf.compat.v1.Session``, as in TF
Serving, so a request's deadline cancels its graph run
(``RunOptions.timeout_in_ms``). Directories without ``saved_model.pb``
(still being copied) are not candidates; a version that fails to load is
remembered and skipped until its files change.
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

import grpc

from serving.model_config import ServedModel
from serving.request_checks import InputSpec, RequestError, quote
from serving.tf_serving_ops import register_tf_serving_ops
from serving.warmup_replay import replay_warmup

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
    """Keeps the versions a model's policy wants loaded; polls for new ones.

    ``resolve`` picks the version a request names (a number, a label, or
    neither: the newest loaded). ``warmup`` replays each version's warmup
    records before it is served.
    """

    def __init__(self, model: ServedModel, poll_seconds: float = 1.0, warmup: bool = True):
        self.model, self.poll_seconds, self.warmup = model, poll_seconds, warmup
        self._loaded: Dict[int, LoadedVersion] = {}
        self._failed: Dict[int, Tuple[Tuple[float, int], str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def base_path(self) -> str:
        return self.model.base_path

    @property
    def current(self) -> Optional[LoadedVersion]:
        """The newest loaded version (what a request naming no version gets)."""
        loaded = self._loaded
        return loaded[max(loaded)] if loaded else None

    def loaded(self) -> Dict[int, LoadedVersion]:
        """Version -> loaded version, a snapshot."""
        return dict(self._loaded)

    def failures(self) -> Dict[int, str]:
        """Version -> load error, for versions that could not be loaded."""
        return {v: err for v, (_, err) in self._failed.items()}

    def resolve(self, version: Optional[int] = None, label: str = "") -> LoadedVersion:
        """The loaded version a request names; ``RequestError`` (TF Serving's codes) if none."""
        loaded = self._loaded
        if label:
            if label not in self.model.labels:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {quote(label)} "
                    f"(model {self.name!r} has {sorted(self.model.labels)})",
                )
            version = self.model.labels[label]
        if version is None:
            if not loaded:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"model {self.name!r} has no loadable version yet under {self.base_path}",
                )
            return loaded[max(loaded)]
        if version not in loaded:
            via = f" (label {label!r})" if label else ""
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model {self.name!r} version {version}{via} "
                f"(serving versions {sorted(loaded)})",
            )
        return loaded[version]

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

    def _load(self, version: int) -> Optional[LoadedVersion]:
        """Loads and warms one version; ``None`` (remembered) if it fails."""
        path = os.path.join(self.base_path, str(version))
        try:
            fingerprint = _fingerprint(path)
        except OSError:
            return None  # removed while we looked
        failed = self._failed.get(version)
        if failed and failed[0] == fingerprint:
            return None
        try:
            loaded = load_version(path, version)
            if self.warmup:
                replayed = replay_warmup(path, loaded.signatures)
                if replayed:
                    log.info(
                        "model %s version %d: %d warmup requests", self.name, version, replayed
                    )
        except Exception as e:  # a corrupt version must not stop serving
            log.error("model %s version %d at %s failed to load: %s", self.name, version, path, e)
            self._failed[version] = (fingerprint, f"{type(e).__name__}: {e}")
            return None
        self._failed.pop(version, None)
        return loaded

    def _wanted(self, on_disk: List[int]) -> Dict[int, LoadedVersion]:
        policy = self.model.policy
        chosen, wanted = {}, policy.wanted(on_disk)
        for version in on_disk if wanted is None else wanted:
            if wanted is None and len(chosen) == policy.num_versions:
                break
            loaded = self._loaded.get(version) or self._load(version)
            if loaded is not None:
                chosen[version] = loaded
        return chosen

    def poll_once(self) -> Optional[LoadedVersion]:
        """Loads the versions the policy wants, then unloads the others;
        returns the newest served."""
        with self._lock:
            chosen = self._wanted(self.candidates())
            if not chosen:
                return self.current  # keep serving what is loaded rather than nothing
            if set(chosen) != set(self._loaded):
                log.info(
                    "model %s: serving versions %s%s",
                    self.name,
                    sorted(chosen),
                    f" (was {sorted(self._loaded)})" if self._loaded else "",
                )
            self._loaded = chosen
            return self.current

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
