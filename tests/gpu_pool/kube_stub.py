"""A local Kubernetes API stub (http.server in a thread) serving the few paths the GPU
autoscaler uses, so the REAL ``kubernetes`` client is exercised end to end:

- GET/PATCH /apis/apps/v1/namespaces/<ns>/deployments/<name>/scale
- GET       /api/v1/namespaces/<ns>/pods?labelSelector=...
- PATCH     /api/v1/namespaces/<ns>/pods/<pod>

``fail`` maps ``(method, kind)`` (kind: ``scale`` or ``pods``) to a list of HTTP statuses
to answer with next (one per request), e.g. ``{("PATCH", "scale"): [409]}``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class KubeStub:
    def __init__(self, namespace: str = "mesh", deployment: str = "mesh-worker-gpu",
                 replicas: int = 1) -> None:
        self.ns = namespace
        self.deployment = deployment
        self.replicas = replicas
        self.rv = 1
        self.pods: dict[str, dict[str, str]] = {}
        self.fail: dict[tuple[str, str], list[int]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                with stub._lock:
                    stub.requests.append((method, self.path, body))
                    code, out = stub.route(method, url.path, parse_qs(url.query), body,
                                           self.headers.get("Content-Type", ""))
                self._send(code, out)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> KubeStub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API -----------------------------------------------------------------------
    def _status(self, code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": reason, "message": message, "code": code}

    def _scale(self) -> dict[str, Any]:
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": self.deployment, "namespace": self.ns,
                             "resourceVersion": str(self.rv)},
                "spec": {"replicas": self.replicas},
                "status": {"replicas": self.replicas, "selector": "app=gpu"}}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any,
              content_type: str) -> tuple[int, dict[str, Any]]:
        scale_path = f"/apis/apps/v1/namespaces/{self.ns}/deployments/{self.deployment}/scale"
        pods_path = f"/api/v1/namespaces/{self.ns}/pods"
        kind = "scale" if path == scale_path else "pods" if path.startswith(pods_path) else ""
        queued = self.fail.get((method, kind))
        if queued:
            code = queued.pop(0)
            if code == 403:
                return self._status(403, "Forbidden", f'{kind} is forbidden: User '
                                    f'"system:serviceaccount:{self.ns}:gpu-autoscaler" cannot '
                                    f'{method.lower()} resource')
            if code == 409:
                self.rv += 1  # somebody else changed it
                return self._status(409, "Conflict", "the object has been modified; please "
                                    "apply your changes to the latest version and try again")
            return self._status(code, "InternalError", "boom")
        if kind == "scale" and method == "GET":
            return 200, self._scale()
        if kind == "scale" and method == "PATCH":
            assert "merge-patch" in content_type, content_type
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != str(self.rv):
                return self._status(409, "Conflict", "the object has been modified")
            self.replicas = int(body["spec"]["replicas"])
            self.rv += 1
            return 200, self._scale()
        if kind == "pods" and method == "GET" and path == pods_path:
            items = [{"metadata": {"name": n, "namespace": self.ns, "annotations": a}}
                     for n, a in sorted(self.pods.items())]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        if kind == "pods" and method == "PATCH":
            name = path.rsplit("/", 1)[1]
            if name not in self.pods:
                return self._status(404, "NotFound", f"pods {name!r} not found")
            self.pods[name].update((body.get("metadata") or {}).get("annotations") or {})
            return 200, {"kind": "Pod", "apiVersion": "v1",
                         "metadata": {"name": name, "namespace": self.ns,
                                      "annotations": self.pods[name]}}
        return self._status(404, "NotFound", f"no route {method} {path}")
