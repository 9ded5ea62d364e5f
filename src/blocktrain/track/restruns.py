"""New runs on an MLflow tracking server through its REST API, with urllib alone, for launches.

The same calls MLflow's client makes (``runs/create``, ``runs/log-batch``, ``runs/update``,
``runs/delete``, and an upload through the server's artifact proxy) without ``import mlflow``,
which costs a launch seconds. tests/integration/tracking/test_restruns.py creates runs both
ways on a real server and compares what MLflow reads back.

:func:`open_server` gives None, and the launch goes through MLflow, for what this does not
speak: credentials other than a token or a user name and password, client certificates,
authentication plugins, an experiment not made yet, or one whose artifacts the server does not
proxy (``mlflow-artifacts:``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any, cast

from blocktrain.errors import BlocktrainError
from blocktrain.track.backend import PARAMS_PER_BATCH, USER_TAG, end_time, now_ms

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
PROXIED = "mlflow-artifacts:"
TIMEOUT_S = 30.0
# Environment MLflow's client reads that this writer does not implement: with any of them set,
# the launch goes through MLflow.
_UNSPOKEN = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_WORKSPACE",
)


def open_server(uri: str, experiment: str, environ: Mapping[str, str]) -> RestRuns | None:
    """The writer for the server at ``uri`` when ``experiment`` is there and proxies its
    artifacts, else None. Raises BlocktrainError when the server answers with an error."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username or parts.password:
        return None
    if any(environ.get(name) for name in _UNSPOKEN):
        return None
    server = RestRuns(uri.rstrip("/"), environ)
    found = server.experiment(experiment)
    if found is None or not found[1].startswith(PROXIED):
        return None
    return server


class RestRuns:
    """Creates, tags, parametrises, sets the status of and deletes runs on a server."""

    def __init__(self, uri: str, environ: Mapping[str, str]) -> None:
        self.uri = uri
        self._headers = {"Content-Type": "application/json", **_auth(environ)}
        self._context = _tls(environ)
        self._experiments: dict[str, tuple[str, str]] = {}
        self._artifact_uris: dict[str, str] = {}

    @contextlib.contextmanager
    def exclusive(self) -> Generator[None]:
        """A server orders its own writes: nothing to hold."""
        yield

    def experiment(self, name: str) -> tuple[str, str] | None:
        """(id, artifact location) of the active experiment ``name``; None when it is not."""
        if name not in self._experiments:
            query = urllib.parse.urlencode({"experiment_name": name})
            answer = self._call("GET", f"experiments/get-by-name?{query}", None, absent_ok=True)
            if not answer:
                return None
            found = answer["experiment"]
            if found.get("lifecycle_stage") != "active":
                return None
            location = str(found.get("artifact_location", ""))
            self._experiments[name] = (str(found["experiment_id"]), location)
        return self._experiments[name]

    def create_run(self, experiment: str, run_name: str | None, tags: Mapping[str, str]) -> str:
        found = self.experiment(experiment)
        if found is None:
            raise BlocktrainError(f"experiment {experiment!r} is not on {self.uri}")
        body: dict[str, object] = {
            "experiment_id": found[0],
            "user_id": tags.get(USER_TAG, "unknown"),
            "start_time": now_ms(),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        if run_name:
            body["run_name"] = run_name
        info = self._call("POST", "runs/create", body)["run"]["info"]
        run_id = str(info["run_id"])
        self._artifact_uris[run_id] = str(info.get("artifact_uri", ""))
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [{"key": k, "value": v} for k, v in params.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self._call(
                "POST",
                "runs/log-batch",
                {"run_id": run_id, "params": items[start : start + PARAMS_PER_BATCH]},
            )

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        """Upload the file ``path`` through the server's artifact proxy."""
        location = self._artifact_uris.get(run_id, "")
        if not location.startswith(PROXIED):
            raise BlocktrainError(f"run {run_id}'s artifacts are not proxied by {self.uri}")
        where = urllib.parse.urlsplit(location).path.strip("/")
        target = "/".join(p for p in (where, artifact_path.strip("/"), path.name) if p)
        url = f"{self.uri}{ARTIFACTS_API}/{urllib.parse.quote(target)}"
        headers = {**self._headers, "Content-Type": "application/octet-stream"}
        request = urllib.request.Request(url, data=path.read_bytes(), method="PUT", headers=headers)  # noqa: S310 - http(s) only
        self._send(request)

    def set_status(self, run_id: str, status: str, end_time_ms: int | None) -> None:
        body: dict[str, object] = {"run_id": run_id, "status": status}
        end = end_time(status, end_time_ms)
        if end is not None:
            body["end_time"] = end
        self._call("POST", "runs/update", body)

    def delete_run(self, run_id: str) -> None:
        self._call("POST", "runs/delete", {"run_id": run_id})

    def _call(
        self, method: str, endpoint: str, body: dict[str, object] | None, *, absent_ok: bool = False
    ) -> dict[str, Any]:
        """The answer; with ``absent_ok``, {} for what the server says does not exist."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only
            f"{self.uri}{API}/{endpoint}", data=data, method=method, headers=self._headers
        )
        text = self._send(request, absent_ok=absent_ok)
        return cast("dict[str, Any]", json.loads(text)) if text.strip() else {}

    def _send(self, request: urllib.request.Request, *, absent_ok: bool = False) -> str:
        try:
            # http(s) only: open_server checked the scheme.
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._context) as got:  # noqa: S310
                return got.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            if absent_ok and exc.code == 404 and "RESOURCE_DOES_NOT_EXIST" in detail:
                return ""
            raise BlocktrainError(
                f"tracking server {self.uri} refused {request.get_method()} "
                f"{urllib.parse.urlsplit(request.full_url).path}: HTTP {exc.code} "
                f"{_message(detail)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise BlocktrainError(f"tracking server {self.uri} did not answer: {exc}") from None


def _message(detail: str) -> str:
    try:
        return str(json.loads(detail).get("message", detail))[:300]
    except (ValueError, AttributeError):
        return detail[:300]


def _auth(environ: Mapping[str, str]) -> dict[str, str]:
    """The Authorization header MLflow's client sends for these variables."""
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (
        environ.get("MLFLOW_TRACKING_USERNAME"),
        environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        basic = base64.standard_b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def _tls(environ: Mapping[str, str]) -> ssl.SSLContext | None:
    if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cafile) if cafile else None
