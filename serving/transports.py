"""The client's two ways to a TF Serving-compatible server: gRPC and REST.

Both take TF Serving's request protos and give back NumPy outputs, so
``RecommenderClient`` builds each request once. A failed REST call raises
``RestError``, a ``grpc.RpcError`` with the status code TF Serving's HTTP code
maps back to, so callers handle either transport's failures alike.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Dict, List, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
import urllib3
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.tensors import to_ndarray
from serving.tls import ClientTls

Outputs = Dict[str, np.ndarray]
_CODE_BY_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class RestError(grpc.RpcError):
    """A REST call the server refused: ``code()`` and ``details()`` as a gRPC error's."""

    def __init__(self, http_status: int, message: str):
        super().__init__(f"HTTP {http_status}: {message}")
        self.http_status, self._message = http_status, message

    def code(self) -> grpc.StatusCode:
        return _CODE_BY_HTTP.get(self.http_status, grpc.StatusCode.INTERNAL)

    def details(self) -> str:
        return self._message


def signature_defs(
    response: get_model_metadata_pb2.GetModelMetadataResponse,
) -> Dict[str, meta_graph_pb2.SignatureDef]:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return dict(signature_map.signature_def)


class GrpcTransport:
    def __init__(
        self,
        target: str,
        timeout: float,
        max_message_bytes: int,
        tls: Optional[ClientTls] = None,
        server_name: Optional[str] = None,
    ):
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.timeout = timeout
        self.channel = (
            grpc.secure_channel(target, tls.credentials(), options=options)
            if tls
            else grpc.insecure_channel(target, options=options)
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def predict(self, request: predict_pb2.PredictRequest) -> Tuple[Outputs, Optional[int]]:
        response = self._predict.Predict(request, timeout=self.timeout)
        outputs = {name: to_ndarray(proto) for name, proto in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def metadata(self, request) -> Dict[str, meta_graph_pb2.SignatureDef]:
        return signature_defs(self._predict.GetModelMetadata(request, timeout=self.timeout))

    def status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        return self._models.GetModelStatus(request, timeout=self.timeout)

    def wait_ready(self, timeout: float) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def _model_path(spec) -> str:
    path = f"/v1/models/{spec.name}"
    if spec.HasField("version"):
        path += f"/versions/{spec.version.value}"
    elif spec.version_label:
        path += f"/labels/{spec.version_label}"
    return path


def _json_values(array: np.ndarray) -> Any:
    if array.dtype.kind in ("S", "O"):
        flat = [{"b64": base64.b64encode(v).decode("ascii")} for v in array.reshape(-1)]
        return np.asarray(flat, dtype=object).reshape(array.shape).tolist() if flat else []
    return array.tolist()


def _from_json(value: Any, dtype: tf.DType) -> np.ndarray:
    if dtype == tf.string:

        def to_bytes(v: Any) -> bytes:
            return base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode("utf-8")

        array = np.asarray(value, dtype=object)
        return np.vectorize(to_bytes, otypes=[object])(array) if array.size else array
    return np.asarray(value, dtype=dtype.as_numpy_dtype)


class RestTransport:
    """TF Serving's REST API over one pooled HTTP connection per thread."""

    def __init__(self, target: str, timeout: float):
        self.base = target if "://" in target else f"http://{target}"
        self.timeout = timeout
        self._http = urllib3.PoolManager(
            maxsize=16, retries=False, timeout=urllib3.Timeout(total=timeout)
        )
        self._outputs: Dict[Tuple[str, str], Dict[str, tf.DType]] = {}

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> Dict[str, Any]:
        response = self._http.request(
            method,
            self.base + path,
            body=None if body is None else json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        try:
            answer = json.loads(response.data or b"{}")
        except ValueError:
            answer = {"error": response.data[:200].decode("utf-8", "replace")}
        if response.status != 200:
            raise RestError(response.status, str(answer.get("error", answer)))
        return answer

    def _output_types(self, spec, signature: str) -> Dict[str, tf.DType]:
        key = (_model_path(spec), signature)
        if key not in self._outputs:
            request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec)
            signature_def = self.metadata(request)[signature]
            self._outputs[key] = {
                name: tf.dtypes.as_dtype(info.dtype) for name, info in signature_def.outputs.items()
            }
        return self._outputs[key]

    def predict(self, request: predict_pb2.PredictRequest) -> Tuple[Outputs, Optional[int]]:
        """``(outputs, None)``: TF Serving's REST answer does not name the version."""
        signature = request.model_spec.signature_name or "serving_default"
        body = {
            "signature_name": signature,
            "inputs": {k: _json_values(to_ndarray(v)) for k, v in request.inputs.items()},
        }
        answer = self._call("POST", _model_path(request.model_spec) + ":predict", body)
        types = self._output_types(request.model_spec, signature)
        outputs = answer["outputs"]
        if not isinstance(outputs, dict) or set(outputs) != set(types):
            ((name, _),) = types.items()
            outputs = {name: outputs}
        return {k: _from_json(v, types[k]) for k, v in outputs.items()}, None

    def metadata(self, request) -> Dict[str, meta_graph_pb2.SignatureDef]:
        answer = self._call("GET", _model_path(request.model_spec) + "/metadata")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        return signature_defs(json_format.ParseDict(answer, response))

    def status(self, request) -> get_model_status_pb2.GetModelStatusResponse:
        answer = self._call("GET", _model_path(request.model_spec))
        response = get_model_status_pb2.GetModelStatusResponse()
        State = get_model_status_pb2.ModelVersionStatus.State
        for entry in answer.get("model_version_status", []):
            status = response.model_version_status.add()
            status.version, status.state = int(entry["version"]), State.Value(entry["state"])
            status.status.error_message = entry.get("status", {}).get("error_message", "")
        return response

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._http.request("GET", self.base + "/v1/models/_", timeout=1.0)
                return
            except urllib3.exceptions.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        self._http.clear()


def statuses(response: get_model_status_pb2.GetModelStatusResponse) -> List[Tuple[int, str]]:
    names = get_model_status_pb2.ModelVersionStatus.State.Name
    return [(s.version, names(s.state)) for s in response.model_version_status]
