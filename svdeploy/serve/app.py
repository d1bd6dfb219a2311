"""The Ray Serve application of ``svd-serve``: two deployments.

- ``Generator`` (``--replicas`` of them, ``--replica-cpus``/``--replica-gpus`` each): loads the
  artifact once (``VideoPipeline.load``) and runs one job at a time (``max_ongoing_requests=1``,
  so Serve's router keeps the other jobs queued and hands each to the first free replica, on any
  node of the cluster). A job streams its events back: started, one per denoising step, then the
  encoded video or the error.
- ``Api`` (one replica, on the head node, where ``--jobs-dir`` is): the HTTP API (FastAPI), the
  job store, the queue limit, cancellation and expiry. It checks every request before it becomes
  a job, so bad input never reaches a replica.

Imports Ray, FastAPI and the runtime; never the model, export or training code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import math
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from ray import serve
from ray.serve.exceptions import RequestCancelledError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from svdeploy.errors import SvdeployError
from svdeploy.manifest import read_manifest
from svdeploy.runtime import VideoPipeline

from .jobs import ACTIVE, CONTENT_TYPES, FINISHED, JobStore, Record, lock_jobs_dir
from .requests import FIELDS, JobRequest, RequestError, check_image, parse_fields
from .settings import ServeSettings
from .worker import JobCancelled, generate_video

APP_NAME = "svd-serve"
GENERATOR = "Generator"
logger = logging.getLogger("ray.serve")
# Retry-After before any job has finished (no measured job time yet).
DEFAULT_RETRY_AFTER_S = 10
PROGRESS_SAVE_S = 1.0

api = FastAPI(title="svd-serve", docs_url=None, redoc_url=None, openapi_url=None)


def error_json(
    status: int,
    code: str,
    message: str,
    field: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


@api.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return error_json(exc.status, exc.code, str(exc), exc.field)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {
        404: f"no route {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return error_json(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        message.get(exc.status_code, str(exc.detail)),
    )


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_json(422, "invalid_request", "the request does not match the API")


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # the traceback goes to the server's log, never to the client
    logger.exception("svd-serve: %s %s failed", request.method, request.url.path)
    return error_json(
        500,
        "internal_error",
        f"internal server error ({type(exc).__name__}); the server log has the details",
    )


# The helpers come before the deployments: serve.ingress serializes the routes when the class is
# defined, with the module globals that exist at that moment.
async def _form_values(form: Any):
    """(text fields, image bytes) from a parsed form; each field at most once."""
    fields: Dict[str, str] = {}
    image: Optional[bytes] = None
    seen = set()
    for name, value in form.multi_items():
        if name in seen:
            raise RequestError(
                400, "duplicate_field", f"form field {name!r} is given more than once", name
            )
        seen.add(name)
        if name == "image":
            if not isinstance(value, UploadFile):
                raise RequestError(
                    422,
                    "invalid_type",
                    "image must be a file part (curl -F image=@photo.png), not a text field",
                    "image",
                )
            image = await value.read()
        elif isinstance(value, UploadFile):
            raise RequestError(
                422, "invalid_type", f"{name} must be a text field, not a file", name
            )
        elif name in FIELDS:
            fields[name] = value
        else:
            raise RequestError(
                400,
                "unknown_field",
                f"unknown form field {name!r}; expected {', '.join(FIELDS)}",
                name,
            )
    if image is None:
        raise RequestError(
            400,
            "missing_field",
            "the image file field is missing (curl -F image=@photo.png)",
            "image",
        )
    return fields, image


def running_replicas() -> int:
    """Generator replicas that have loaded the artifact (Serve marks a replica RUNNING once its
    constructor returned)."""
    status = serve.status().applications.get(APP_NAME)
    if status is None or GENERATOR not in status.deployments:
        return 0
    return int(status.deployments[GENERATOR].replica_states.get("RUNNING", 0))


def job_view(record: Record) -> Dict[str, Any]:
    """What clients see of a record."""
    view = {
        k: record.get(k)
        for k in (
            "id",
            "status",
            "progress",
            "created_at",
            "started_at",
            "finished_at",
            "attempts",
            "error",
            "parameters",
        )
    }
    view["object"] = "video"
    run = record.get("run") or {}
    timings: Dict[str, Any] = {}
    if record.get("started_at"):
        timings["queued_s"] = record["started_at"] - record["created_at"]
    if record.get("finished_at") and record.get("started_at"):
        timings["run_s"] = record["finished_at"] - record["started_at"]
    timings.update(
        {
            k: v
            for k, v in (run.get("timings") or {}).items()
            if k.endswith("_s") and isinstance(v, (int, float))
        }
    )
    view["timings"] = timings
    view["backend"] = record.get("backend")
    if record.get("status") == "succeeded" and record.get("result"):
        view["content_url"] = f"/v1/videos/{record['id']}/content"
        view.update(
            bytes=record["result"]["bytes"],
            sha256=record["result"]["sha256"],
            content_type=record["result"]["content_type"],
        )
    return view


def artifact_summary(manifest: Any, settings: ServeSettings) -> Dict[str, Any]:
    """The manifest's summary for GET /v1/artifact."""
    from svdeploy.runtime import runnable_format

    # the graphs the replicas run (lite: the Lite graphs, else the MindIR ones)
    fmt = runnable_format(settings.backend, manifest.formats())
    graphs = [g for g in manifest.graphs if g.format == fmt]
    root = Path(settings.artifact)
    return {
        "variant": manifest.variant,
        "height": manifest.height,
        "width": manifest.width,
        "num_frames": manifest.num_frames,
        "latent_shape": list(manifest.latent_shape),
        "cfg": manifest.cfg,
        "decode_chunk_size": manifest.decode_chunk_size,
        "dtype": manifest.dtype,
        "target": manifest.target,
        "defaults": dict(manifest.defaults),
        "backend": settings.backend,
        "format": fmt,
        "replicas": settings.replicas,
        "max_queue": settings.max_queue,
        "max_upload_bytes": settings.max_upload,
        "output_formats": list(CONTENT_TYPES),
        "graphs": [
            {
                "name": g.name,
                "file": g.file,
                "dtype": g.dtype,
                "bytes": (root / g.file).stat().st_size if (root / g.file).is_file() else None,
            }
            for g in graphs
        ],
    }


# ---------------------------------------------------------------------------------------------
# Generator: one VideoPipeline per replica
# ---------------------------------------------------------------------------------------------
@serve.deployment(name=GENERATOR, max_ongoing_requests=1)
class Generator:
    def __init__(self, settings: Dict[str, Any]) -> None:
        s = ServeSettings.from_json(settings)
        self.pipe = VideoPipeline.load(
            s.artifact,
            backend=s.backend,
            verify_hashes=s.verify_hashes,
            precision=s.precision,
            lite_python=s.lite_python,
        )
        # One thread: a cancelled job's last step finishes before the next job starts.
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="svd-job")

    async def generate(self, image: bytes, parameters: Dict[str, Any]):
        """Yields {"kind": "started" | "step" | "result" | "error" | "cancelled", ...}."""
        loop = asyncio.get_running_loop()
        events: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        cancelled = threading.Event()

        def put(event: Dict[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def work() -> None:
            put({"kind": "started", "pid": os.getpid(), "backend": self.pipe.backend})
            try:
                data, metadata = generate_video(
                    self.pipe,
                    image,
                    JobRequest(**parameters),
                    on_step=lambda done, total: put({"kind": "step", "done": done, "total": total}),
                    cancelled=cancelled,
                )
                put({"kind": "result", "data": data, "metadata": metadata})
            except JobCancelled:
                put({"kind": "cancelled"})
            except SvdeployError as exc:
                put({"kind": "error", "message": str(exc)})
            except Exception as exc:  # a bug or a backend crash: the log has the traceback
                logger.exception("svd-serve: a job failed in the replica")
                put(
                    {
                        "kind": "error",
                        "message": f"the replica failed ({type(exc).__name__}: {str(exc)[:300]})",
                    }
                )

        loop.run_in_executor(self.executor, work)
        try:
            while True:
                event = await events.get()
                yield event
                if event["kind"] in ("result", "error", "cancelled"):
                    return
        finally:
            cancelled.set()  # the request was cancelled (or is over): stop after this step


# ---------------------------------------------------------------------------------------------
# Api: HTTP, jobs, queue
# ---------------------------------------------------------------------------------------------
@serve.deployment(
    name="Api",
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}},
)
@serve.ingress(api)
class Api:
    def __init__(self, generator: Any, settings: Dict[str, Any]) -> None:
        self.settings = ServeSettings.from_json(settings)
        self.generator = generator
        self.manifest = read_manifest(self.settings.artifact, verify_hashes=False, formats=[])
        self.store = JobStore(self.settings.jobs_dir)
        self._lock_file = lock_jobs_dir(Path(self.settings.jobs_dir))
        self.active: Dict[str, Record] = {}
        self.tasks: Dict[str, "asyncio.Task[None]"] = {}
        self.streams: Dict[str, Any] = {}
        self.saved_at: Dict[str, float] = {}
        self.durations: Deque[float] = deque(maxlen=32)
        for record in self.store.recover():
            self._start(record)
        self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    # -- routes ----------------------------------------------------------------------------------
    @api.post("/v1/videos", status_code=202)
    async def create_video(self, request: Request) -> JSONResponse:
        body = await self._read_body(request)
        fields, image = await self._parse_form(request, body)
        job = parse_fields(self.manifest, fields)
        await asyncio.to_thread(check_image, image)
        if len(self.active) >= self.settings.max_queue:
            retry = self._retry_after()
            return error_json(
                429,
                "queue_full",
                f"{len(self.active)} jobs are queued or running, "
                f"the limit is {self.settings.max_queue} (--max-queue); retry in "
                f"about {retry} s",
                None,
                headers={"Retry-After": str(retry)},
            )
        record = await asyncio.to_thread(self.store.create, job.to_json(), image)
        self._start(record)
        return JSONResponse(
            job_view(record), status_code=202, headers={"Location": f"/v1/videos/{record['id']}"}
        )

    @api.get("/v1/videos/{job_id}")
    async def get_video(self, job_id: str) -> JSONResponse:
        return JSONResponse(job_view(self._record(job_id)))

    @api.get("/v1/videos/{job_id}/content")
    async def get_content(self, job_id: str):
        record = self._record(job_id)
        if record["status"] != "succeeded":
            return error_json(
                409,
                "not_finished" if record["status"] in ACTIVE else "no_content",
                f"job {job_id} is {record['status']}: its content exists only once "
                "it has succeeded",
            )
        fmt = record["parameters"]["format"]
        return FileResponse(
            self.store.result_path(record),
            media_type=CONTENT_TYPES[fmt],
            filename=f"{job_id}.{fmt}",
        )

    @api.delete("/v1/videos/{job_id}")
    async def delete_video(self, job_id: str) -> JSONResponse:
        record = self._record(job_id)
        if record["status"] in FINISHED:
            await asyncio.to_thread(self.store.delete, job_id)
            return JSONResponse({"id": job_id, "deleted": True})
        record.update(status="cancelled", finished_at=time.time(), error=None)
        self.store.save(record)
        if job_id in self.streams:
            self.streams[job_id].cancel()
        if job_id in self.tasks:
            self.tasks[job_id].cancel()
        return JSONResponse(job_view(record))

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        ready = await asyncio.to_thread(running_replicas)
        body = {
            "status": "ok" if ready >= self.settings.replicas else "loading",
            "replicas_ready": ready,
            "replicas": self.settings.replicas,
            "jobs_active": len(self.active),
        }
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @api.get("/v1/artifact")
    async def artifact(self) -> JSONResponse:
        return JSONResponse(artifact_summary(self.manifest, self.settings))

    # -- request parsing -------------------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_upload
        too_large = RequestError(
            413,
            "payload_too_large",
            f"the request is larger than the upload limit of {limit} bytes (--max-upload)",
            "image",
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():  # a body without Content-Length is counted too
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse_form(self, request: Request, body: bytes):
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise RequestError(
                415,
                "unsupported_media_type",
                "expected a multipart/form-data "
                "body with an image file field and optional text fields",
            )

        async def replay() -> Dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=4, max_fields=32)
        except Exception as exc:  # malformed multipart: starlette raises its own errors
            raise RequestError(
                400,
                "invalid_body",
                f"the multipart body cannot be parsed ({getattr(exc, 'detail', exc)})",
            ) from None
        try:
            return await _form_values(form)
        finally:
            await form.close()

    # -- jobs ------------------------------------------------------------------------------------
    def _record(self, job_id: str) -> Record:
        record = self.active.get(job_id) or self.store.get(job_id)
        if record is None:
            raise RequestError(
                404, "not_found", f"no job {job_id!r} (unknown, deleted or expired)", "id"
            )
        return record

    def _start(self, record: Record) -> None:
        self.active[record["id"]] = record
        self.tasks[record["id"]] = asyncio.get_running_loop().create_task(self._run(record))

    async def _run(self, record: Record) -> None:
        job_id = record["id"]
        try:
            image = await asyncio.to_thread(self.store.input_path(job_id).read_bytes)
            stream = self.generator.options(stream=True).generate.remote(
                image, record["parameters"]
            )
            self.streams[job_id] = stream
            async for event in stream:
                if record["status"] == "cancelled":
                    break
                await self._apply(record, event)
            if record["status"] in ACTIVE:
                self._finish(record, "failed", error="the replica stopped without a result")
        except (asyncio.CancelledError, RequestCancelledError):
            # A client's DELETE (the record is saved as cancelled), or the server stopping: then
            # the record stays queued/running on disk and the next start runs the job again.
            pass
        except Exception as exc:  # the replica died, Ray failed
            logger.exception("svd-serve: job %s lost its replica", job_id)
            if record["status"] in ACTIVE:
                self._finish(
                    record,
                    "failed",
                    error=f"the replica running this job failed "
                    f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]})",
                )
        finally:
            for table in (self.active, self.tasks, self.streams, self.saved_at):
                table.pop(job_id, None)

    async def _apply(self, record: Record, event: Dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "started":
            record.update(
                status="running",
                started_at=time.time(),
                attempts=record.get("attempts", 0) + 1,
                backend=event["backend"],
            )
            self.store.save(record)
        elif kind == "step":
            # GET reads the in-memory record of an active job; the file gets the progress at
            # most every PROGRESS_SAVE_S (a restart starts the job over anyway)
            record["progress"] = event["done"] / event["total"]
            if time.monotonic() - self.saved_at.get(record["id"], 0.0) >= PROGRESS_SAVE_S:
                self.store.save(record)
                self.saved_at[record["id"]] = time.monotonic()
        elif kind == "result":
            data = event["data"]
            fmt = record["parameters"]["format"]
            await asyncio.to_thread(self.store.write_result, record, data)
            record.update(
                run=event["metadata"],
                result={
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "content_type": CONTENT_TYPES[fmt],
                },
            )
            self._finish(record, "succeeded")
            if record["started_at"]:
                self.durations.append(record["finished_at"] - record["started_at"])
        elif kind == "error":
            self._finish(record, "failed", error=event["message"])

    def _finish(self, record: Record, status: str, error: Optional[str] = None) -> None:
        record.update(status=status, error=error, finished_at=time.time())
        if status == "succeeded":
            record["progress"] = 1.0
        self.store.save(record)

    def _retry_after(self) -> int:
        """Seconds until a queue place is likely free: the median job time over the replicas
        for the jobs ahead of the next free place."""
        if not self.durations:
            return DEFAULT_RETRY_AFTER_S
        per_job = sorted(self.durations)[len(self.durations) // 2]
        ahead = max(1, len(self.active) - self.settings.max_queue + 1)
        return max(1, math.ceil(per_job * ahead / self.settings.replicas))

    async def _expire_forever(self) -> None:
        period = min(60.0, max(1.0, self.settings.keep_seconds / 4))
        while True:
            try:
                gone = await asyncio.to_thread(self.store.expire, self.settings.keep_seconds)
                if gone:
                    logger.info("svd-serve: expired %d finished job(s)", len(gone))
            except Exception:  # a hiccup of the file system must not stop expiry for good
                logger.exception("svd-serve: expiry failed")
            await asyncio.sleep(period)


def build_app(settings: ServeSettings):
    """The bound application: ``serve.run(build_app(settings), name=APP_NAME)``."""
    generator = Generator.options(
        num_replicas=settings.replicas,
        ray_actor_options={"num_cpus": settings.replica_cpus, "num_gpus": settings.replica_gpus},
    ).bind(settings.to_json())
    return Api.bind(generator, settings.to_json())


__all__ = ["APP_NAME", "Generator", "Api", "build_app", "job_view", "artifact_summary"]
