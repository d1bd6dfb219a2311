"""svdeploy.serve: ``svd-serve``, image-to-video as an HTTP service on Ray Serve.

Builds on the runtime's public API only (VideoPipeline, the parameter checks, the video
writers): serve → runtime → core. The pure parts (``jobs``, ``requests``, ``settings``,
``worker``) import no Ray; ``app`` and ``server`` need the ``serve`` extra
(``pip install svdeploy[serve]``).
"""

from .jobs import JobStore
from .requests import JobRequest, RequestError, check_image, parse_fields
from .settings import ServeSettings, parse_duration, parse_size, resolve_settings

__all__ = [
    "JobStore",
    "JobRequest",
    "RequestError",
    "check_image",
    "parse_fields",
    "ServeSettings",
    "parse_duration",
    "parse_size",
    "resolve_settings",
]
