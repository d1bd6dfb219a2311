"""A small HTTP client of the svd-serve API, standard library only (used by ``svd-bench serve``
and the tests; handy in scripts)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from svdeploy.errors import ServeError


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def _lower(items: Any) -> Dict[str, str]:
    return {name.lower(): value for name, value in items}


def encode_multipart(
    fields: Mapping[str, Any], files: Mapping[str, Tuple[str, bytes]]
) -> Tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request: text ``fields``, and ``files``
    as name → (file name, bytes)."""
    boundary = "svdeploy-" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode("utf-8")
        )
    for name, (filename, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode(
                "utf-8"
            )
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode("utf-8"))
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ServeClient:
    """``ServeClient("http://127.0.0.1:8000")``; every call returns the server's reply, error
    statuses included (nothing raises on a 4xx)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Reply:
        req = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return Reply(response.status, _lower(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, _lower(exc.headers.items()), exc.read())

    def submit(self, image: Optional[bytes], filename: str = "image.png", **fields: Any) -> Reply:
        """POST /v1/videos with ``image`` and the given form fields (None values left out)."""
        files = {"image": (filename, image)} if image is not None else {}
        body, content_type = encode_multipart(
            {k: v for k, v in fields.items() if v is not None}, files
        )
        return self.request("POST", "/v1/videos", body, {"Content-Type": content_type})

    def job(self, job_id: str) -> Reply:
        return self.request("GET", f"/v1/videos/{job_id}")

    def content(self, job_id: str) -> Reply:
        return self.request("GET", f"/v1/videos/{job_id}/content")

    def delete(self, job_id: str) -> Reply:
        return self.request("DELETE", f"/v1/videos/{job_id}")

    def health(self) -> Reply:
        return self.request("GET", "/healthz")

    def wait(
        self,
        job_id: str,
        timeout: float,
        poll: float = 0.1,
        until: Tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    ) -> Dict[str, Any]:
        """Poll the job until its status is one of ``until``; ServeError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.job(job_id)
            record = reply.json()
            if reply.status == 200 and record["status"] in until:
                return record
            if reply.status != 200:
                raise ServeError(f"job {job_id}: GET answered {reply.status} {record}")
            if time.monotonic() > deadline:
                raise ServeError(f"job {job_id} is still {record['status']} after {timeout} s")
            time.sleep(poll)


__all__ = ["ServeClient", "Reply", "encode_multipart"]
