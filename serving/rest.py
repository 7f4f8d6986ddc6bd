"""TF Serving's REST API (its port 8501 convention) over the same ``Servables``.

    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            (status)
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata
    GET  {prometheus path}                 (with a monitoring config)

Bodies and answers are TF Serving's JSON (``rest_json``); errors are
``{"error": ...}`` with the HTTP code TF Serving maps each status code to.
Bounded like the gRPC port: at most ``max_calls`` connections are served (a
pool of ``max_concurrent_requests`` threads, the rest waiting), beyond that a
connection is answered 429 at once; a body must state its length, at most
``max_message_bytes``; an idle or slow connection is closed after
``idle_seconds``.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import logging
import re
import socket
import threading
import urllib.parse
from typing import Any, Optional, Tuple

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from serving import rest_json
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.predictor import (
    DEFAULT_SIGNATURE,
    METADATA,
    PREDICT,
    STATUS,
    Failure,
    Servables,
    failure_of,
)
from serving.request_checks import RequestError, invalid, quote

log = logging.getLogger(__name__)
ENTRYPOINT = "REST"
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:[A-Za-z]+)?$"
)
# TF Serving's mapping of status codes to HTTP (http_server.cc).
HTTP_CODES = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_MAX_VERSION = 2**63 - 1
_BUSY = b'{"error": "too many connections; retry later"}'
_TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


def _spec(request, match: re.Match) -> None:
    """Fills ``request.model_spec`` from the URL's model, version and label."""
    spec = request.model_spec
    spec.name = urllib.parse.unquote(match["name"])
    if match["version"] is not None:
        version = match["version"]
        if not version.isdigit() or int(version) > _MAX_VERSION:
            raise invalid(f"version {quote(version)} in the URL is not a version number")
        spec.version.value = int(version)
    if match["label"] is not None:
        spec.version_label = urllib.parse.unquote(match["label"])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    server: "_PooledHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, value: Any) -> None:
        self._send(code, json.dumps(value).encode("utf-8"))

    def _fail(self, failure: Failure) -> None:
        code, message = failure
        self._json(HTTP_CODES.get(code, 500), {"error": message})

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        try:
            self._route(method)
        except RequestError as e:
            self._fail((e.code, e.message))
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # a bug must not take the server down
            self._fail(failure_of(e, f"REST {method}"))

    def _route(self, method: str) -> None:
        body = self._read_body()  # read whatever comes next, so the connection stays in step
        path = urllib.parse.urlsplit(self.path).path
        rest: "RestServer" = self.server.owner
        if method == "GET" and rest.prometheus_path and path == rest.prometheus_path:
            self._send(200, rest.servables.metrics.exposition(), METRICS_CONTENT_TYPE)
            return
        match = _PATH.match(path)
        if match is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
        tail = match["tail"] or ""
        if method == "POST" and tail == ":predict":
            self._predict(match, body)
        elif method == "GET" and tail in ("", "/metadata"):
            api = METADATA if tail else STATUS
            request = (
                get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                if tail
                else get_model_status_pb2.GetModelStatusRequest()
            )
            _spec(request, match)
            response, failure = rest.servables.handle(ENTRYPOINT, api, request)
            if failure:
                self._fail(failure)
            elif tail:
                self._json(200, rest_json.metadata_response(response))
            else:
                self._json(200, rest_json.status_response(response))
        elif tail.startswith(":") and tail != ":predict":
            raise RequestError(
                grpc.StatusCode.UNIMPLEMENTED, f"method {tail[1:]!r} is not served; use :predict"
            )
        else:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise invalid("a body must be sent with Content-Length, not Transfer-Encoding")
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            self.close_connection = True
            raise invalid(f"Content-Length {quote(length)} is not a number")
        limit = self.server.owner.servables.limits.max_message_bytes
        if int(length) > limit:
            self.close_connection = True
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the body of {int(length)} bytes is larger than the limit of {limit}",
            )
        return self.rfile.read(int(length))

    def _predict(self, match: re.Match, body: bytes) -> None:
        rest: "RestServer" = self.server.owner
        request, formats = predict_pb2.PredictRequest(), []

        def prepare() -> None:
            _spec(request, match)
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError) as e:
                raise invalid(f"the body is not valid JSON: {quote(str(e), 200)}") from e
            if isinstance(parsed, dict) and "signature_name" in parsed:
                if not isinstance(parsed["signature_name"], str):
                    raise invalid('"signature_name" must be a string')
                request.model_spec.signature_name = parsed["signature_name"]
            formats.append(rest.fill(request, parsed))

        response, failure = rest.servables.handle(
            ENTRYPOINT, PREDICT, request, lambda: rest.servables.limits.request_timeout_ms, prepare
        )
        if failure:
            self._fail(failure)
        else:
            self._json(200, rest_json.predict_response(response, formats[0]))


class _PooledHTTPServer(http.server.HTTPServer):
    """An HTTP server whose connections run on a bounded pool of threads."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], owner: "RestServer"):
        self.owner = owner
        limits = owner.servables.limits
        self._slots = threading.BoundedSemaphore(limits.max_calls)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=owner.servables.handler_threads, thread_name_prefix="rest"
        )
        self._open: set = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_TOO_MANY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        request.settimeout(self.owner.idle_seconds)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed ACKs
        with self._open_lock:
            self._open.add(request)
        self._pool.submit(self._serve, request, client_address)

    def _serve(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.debug("REST connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        """Stops listening, ends idle keep-alive connections, waits for the rest."""
        super().server_close()
        with self._open_lock:
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RD)  # a request being answered still is
                except OSError:
                    pass
        self._pool.shutdown(wait=True, cancel_futures=True)


class RestServer:
    """Serves ``servables`` over TF Serving's REST API; ``start()``/``stop()``."""

    def __init__(
        self,
        servables: Servables,
        host: str = "127.0.0.1",
        port: int = 8501,
        prometheus_path: Optional[str] = None,
        idle_seconds: float = 10.0,
    ):
        self.servables, self.prometheus_path = servables, prometheus_path
        self.idle_seconds = idle_seconds
        self._http = _PooledHTTPServer((host, port), self)
        self.port = self._http.server_address[1]
        self.address = f"{host}:{self.port}"
        self._thread: Optional[threading.Thread] = None

    def fill(self, request: predict_pb2.PredictRequest, body: Any) -> str:
        """Sets the request's inputs from a Predict body, typed by its signature;
        returns the body's format (rows or columns)."""
        _, loaded = self.servables.resolve(request.model_spec)
        signature = loaded.signatures.get(request.model_spec.signature_name or DEFAULT_SIGNATURE)
        if signature is None:
            return rest_json.ROWS  # ``predict`` answers with the available signatures
        tensors, fmt = rest_json.predict_request(
            body, signature.inputs, self.servables.limits.request
        )
        for key, tensor in tensors.items():
            request.inputs[key].CopyFrom(tensor)
        return fmt

    def start(self) -> "RestServer":
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._thread:
            self._thread.join(timeout=10)
