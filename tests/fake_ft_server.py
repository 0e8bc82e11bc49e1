"""A real HTTP server on 127.0.0.1 speaking the OpenAI fine-tuning job API (the parts the openai trainer uses).

Endpoints: POST /v1/files (multipart, purpose=fine-tune), GET /v1/files/{id}, POST /v1/fine_tuning/jobs,
GET /v1/fine_tuning/jobs/{id}, GET /v1/fine_tuning/jobs/{id}/events (newest first, `after` + `limit` cursor),
POST /v1/fine_tuning/jobs/{id}/cancel.

A job advances one state per GET of the job: validating_files -> queued -> running (x `running_polls`) -> the
scenario's end (`succeeded` or `failed`), emitting message and metrics events on the way, like the real service.
`rate_limit_first` answers the first N requests with 429 + Retry-After, to exercise the client's retries.
Everything the server received is kept in `requests`, `files` and `jobs` for the tests to inspect.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional


@dataclass
class Scenario:
    outcome: str = "success"
    """`success` or `failure` (the job ends `failed` with `failure_message`)."""
    running_polls: int = 1
    """GETs of the job that answer `running` before the end state."""
    rate_limit_first: int = 0
    """Answer the first N requests (any endpoint) with 429."""
    retry_after_s: float = 0.2
    """Retry-After sent with each 429."""
    failure_message: str = "Training file has 3 examples; at least 10 are required."
    total_steps: int = 4
    """Steps reported by the metrics events."""


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 200


@dataclass
class FakeFineTuningServer:
    scenario: Scenario = field(default_factory=Scenario)
    requests: list[Received] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _httpd: Optional[ThreadingHTTPServer] = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rate_limited: int = 0
    _polls: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> FakeFineTuningServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def count(self, method: str, pattern: str) -> int:
        """Requests received (excluding 429-refused ones) whose path matches `pattern`."""
        return sum(1 for r in self.requests if r.method == method and r.status != 429 and re.fullmatch(pattern, r.path))

    # ------------------------------------------------------------------------------------------ dispatch
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = h.path.split("?", 1)[0]
        query = dict(p.split("=", 1) for p in h.path.split("?", 1)[1].split("&")) if "?" in h.path else {}
        rec = Received(method, path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
            if self._rate_limited < self.scenario.rate_limit_first:
                self._rate_limited += 1
                rec.status = 429
                return self._send(
                    h,
                    429,
                    _error("Rate limit reached", "rate_limit_exceeded"),
                    {"Retry-After": str(self.scenario.retry_after_s)},
                )
            if not rec.headers.get("authorization", "").startswith("Bearer "):
                rec.status = 401
                return self._send(h, 401, _error("Missing bearer token", "invalid_api_key"))
            status, payload = self._route(method, path, query, rec)
            rec.status = status
        self._send(h, status, payload)

    def _route(self, method: str, path: str, query: dict[str, str], rec: Received) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/files":
            return self._upload(rec)
        if m := re.fullmatch(r"/v1/files/([^/]+)", path):
            f = self.files.get(m[1])
            return (200, _file_object(f)) if f else (404, _error(f"No such File object: {m[1]}", None))
        if method == "POST" and path == "/v1/fine_tuning/jobs":
            return self._create_job(json.loads(rec.body or b"{}"))
        m = re.fullmatch(r"/v1/fine_tuning/jobs/([^/]+)(/events|/cancel)?", path)
        if not m or m[1] not in self.jobs:
            return 404, _error(f"Not found: {path}", None)
        job_id, tail = m[1], m[2]
        if method == "GET" and tail is None:
            self._advance(job_id)
            return 200, self.jobs[job_id]
        if method == "GET" and tail == "/events":
            return 200, self._events_page(job_id, query)
        if method == "POST" and tail == "/cancel":
            job = self.jobs[job_id]
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return 400, _error(f"Job {job_id} has already completed: {job['status']}", None)
            self._set_status(job_id, "cancelled", "Fine-tuning job cancelled.")
            return 200, job
        return 404, _error(f"Not found: {path}", None)

    # ------------------------------------------------------------------------------------------ endpoints
    def _upload(self, rec: Received) -> tuple[int, dict[str, Any]]:
        msg = BytesParser(policy=HTTP_POLICY).parsebytes(
            b"Content-Type: " + rec.headers["content-type"].encode() + b"\r\n\r\n" + rec.body
        )
        fields: dict[str, Any] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        if fields.get("purpose", (None, b""))[1] != b"fine-tune":
            return 400, _error("purpose must be fine-tune", "invalid_value")
        filename, content = fields["file"]
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = {"id": file_id, "filename": filename, "content": content, "purpose": "fine-tune"}
        return 200, _file_object(self.files[file_id])

    def _create_job(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("training_file") not in self.files:
            return 400, _error(f"invalid training_file: {body.get('training_file')}", "invalid_request_error")
        if body.get("validation_file") is not None and body["validation_file"] not in self.files:
            return 400, _error(f"invalid validation_file: {body['validation_file']}", "invalid_request_error")
        job_id = f"ftjob-{len(self.jobs) + 1:04d}"
        hp = (
            (body.get("method") or {}).get("supervised", {}).get("hyperparameters") or body.get("hyperparameters") or {}
        )
        self.jobs[job_id] = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": body["model"],
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed") or 0,
            "hyperparameters": {
                "n_epochs": hp.get("n_epochs", "auto"),
                "batch_size": hp.get("batch_size", "auto"),
                "learning_rate_multiplier": hp.get("learning_rate_multiplier", "auto"),
            },
            "method": body.get("method") or {"type": "supervised"},
            "suffix": body.get("suffix"),
            "request": body,  # what the client sent, for assertions (not part of the real object)
        }
        self.events[job_id] = []
        self._polls[job_id] = 0
        self._event(job_id, f"Created fine-tuning job: {job_id}")
        self._event(job_id, "Validating training file")
        return 200, self.jobs[job_id]

    def _advance(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        n = self._polls[job_id] = self._polls[job_id] + 1
        sc = self.scenario
        if n == 1:
            if sc.outcome == "failure":
                job["error"] = {
                    "code": "invalid_training_file",
                    "message": sc.failure_message,
                    "param": "training_file",
                }
                self._set_status(job_id, "failed", f"Training file validation failed: {sc.failure_message}")
            else:
                self._set_status(job_id, "queued", "Files validated, moving job to queued state")
        elif n - 1 <= sc.running_polls:
            if job["status"] != "running":
                self._set_status(job_id, "running", "Fine-tuning job started")
            step = n - 1
            self._event(
                job_id,
                f"Step {step}/{sc.total_steps}: training loss={1.0 / step:.2f}",
                type_="metrics",
                data={"step": step, "total_steps": sc.total_steps, "train_loss": 1.0 / step},
            )
        else:
            job["trained_tokens"] = 12345
            job["fine_tuned_model"] = f"ft:{job['model']}:org-fake:{job['suffix'] or 'none'}:{job_id[-4:]}"
            job["finished_at"] = int(time.time())
            self._event(job_id, f"New fine-tuned model created: {job['fine_tuned_model']}")
            self._set_status(job_id, "succeeded", "The job has successfully completed")

    def _set_status(self, job_id: str, status: str, message: str) -> None:
        self.jobs[job_id]["status"] = status
        self._event(job_id, message, level="error" if status == "failed" else "info")

    def _event(
        self,
        job_id: str,
        message: str,
        level: str = "info",
        type_: str = "message",
        data: Optional[dict[str, Any]] = None,
    ) -> None:
        evs = self.events[job_id]
        evs.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{job_id[-4:]}-{len(evs) + 1:04d}",
                "created_at": int(time.time()),
                "level": level,
                "message": message,
                "type": type_,
                "data": data or {},
            }
        )

    def _events_page(self, job_id: str, query: dict[str, str]) -> dict[str, Any]:
        newest_first = list(reversed(self.events[job_id]))
        if "after" in query:  # cursor: events older than `after`
            ids = [e["id"] for e in newest_first]
            newest_first = newest_first[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
        limit = int(query.get("limit", 20))
        page = newest_first[:limit]
        return {"object": "list", "data": page, "has_more": len(newest_first) > limit}

    # ------------------------------------------------------------------------------------------ replies
    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], headers: Optional[dict[str, str]] = None
    ) -> None:
        body = json.dumps({k: v for k, v in payload.items() if k != "request"}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)


def _file_object(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "file",
        "id": f["id"],
        "bytes": len(f["content"]),
        "created_at": int(time.time()),
        "filename": f["filename"],
        "purpose": f["purpose"],
        "status": "processed",
    }


def _error(message: str, code: Optional[str]) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
