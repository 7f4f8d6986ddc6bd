"""Which models a server serves, and which of their versions: TF Serving's
``--model_config_file`` (``model_config_list`` with ``model_version_policy``
and ``version_labels``) or ``--model_name``/``--model_base_path``.

Policies as in TF Serving: ``latest { num_versions: N }`` (the default, N=1)
serves the newest N loadable versions, ``all {}`` every version on disk,
``specific { versions: ... }`` exactly those. A label names one version
(``stable``, ``canary``) that requests may ask for instead of a number.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Sequence, Tuple

from serving.request_log import RequestLogging
from serving.serving_protos import ConfigFileError, ModelServerConfig, read_text_proto

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """``kind`` is ``latest``, ``all`` or ``specific``."""

    kind: str = "latest"
    num_versions: int = 1
    versions: Tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"unknown version policy {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(f"latest {{ num_versions }} must be >= 1, got {self.num_versions}")
        if self.kind == "specific" and not self.versions:
            raise ValueError("specific {} names no versions")

    def wanted(self, on_disk: Sequence[int]) -> Optional[List[int]]:
        """Versions to serve among ``on_disk`` (newest first); ``None`` for
        "the newest ``num_versions`` that load" (the store decides)."""
        if self.kind == "all":
            return list(on_disk)
        if self.kind == "specific":
            return [v for v in on_disk if v in self.versions]
        return None

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "all":
            return "all"
        return f"specific {list(self.versions)}"


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """One model: its name, the directory of its integer versions, policy and labels."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Dict[str, int] = dataclasses.field(default_factory=dict)
    # A sample of its Predict calls to log (TF Serving's logging_config); None: off.
    logging: Optional[RequestLogging] = None

    def __post_init__(self):
        if not self.name:
            raise ValueError("a model needs a name")
        if not self.base_path:
            raise ValueError(f"model {self.name!r} needs a base_path")
        for label, version in self.labels.items():
            if not _LABEL.match(label):
                raise ValueError(f"model {self.name!r}: version label {label!r} is not a name")
            if version < 1:
                raise ValueError(f"model {self.name!r}: label {label!r} names version {version}")


def _policy(config) -> VersionPolicy:
    which = config.model_version_policy.WhichOneof("policy_choice")
    if which is None:
        return VersionPolicy()
    if which == "latest":
        return VersionPolicy("latest", config.model_version_policy.latest.num_versions or 1)
    if which == "all":
        return VersionPolicy("all")
    return VersionPolicy("specific", versions=tuple(config.model_version_policy.specific.versions))


def read_model_config_file(path: str) -> List[ServedModel]:
    """The models of a ``ModelServerConfig`` text file (what the Pusher writes)."""
    config = read_text_proto(path, ModelServerConfig)
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigFileError(f"{path!r} has no model_config_list")
    models: List[ServedModel] = []
    for entry in config.model_config_list.config:
        platform = entry.model_platform or "tensorflow"
        try:
            if platform != "tensorflow":
                raise ValueError(f"model_platform {platform!r} (only 'tensorflow' is served)")
            models.append(
                ServedModel(
                    entry.name,
                    entry.base_path,
                    _policy(entry),
                    dict(entry.version_labels),
                    RequestLogging.from_proto(entry.logging_config),
                )
            )
        except ValueError as e:
            raise ConfigFileError(f"{path!r}, model {entry.name!r}: {e}") from e
    names = [m.name for m in models]
    if not models:
        raise ConfigFileError(f"{path!r} lists no models")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigFileError(f"{path!r} lists models {duplicated} more than once")
    return models
