"""Whether the Hugging Face hub can be reached, and the offline flags that follow from it.

Without a reachable hub, every hub lookup of transformers / datasets / huggingface_hub waits on its
timeouts and retries (about 25 s per call here) before falling back to local files. `harness` sets the
libraries' offline flags itself, before they are imported, when asked (`--offline`, or
`HARNESS_OFFLINE=1`) or when a quick connection to the hub (its endpoint, or the HTTPS proxy when one is
set) fails within `CHECK_TIMEOUT_S`; flags the user set are left alone. The check runs once per process,
and the flags travel to the processes the harness starts through the environment.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

OFFLINE_ENV = "HARNESS_OFFLINE"
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
CHECK_TIMEOUT_S = 2.0
_TRUE = ("1", "true", "yes", "on")


def _target() -> tuple[str, int]:
    """Where a hub request would connect first: the HTTPS proxy if one is set, else the hub endpoint."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(name):
            proxy = urlparse(os.environ[name] if "://" in os.environ[name] else f"http://{os.environ[name]}")
            return proxy.hostname or "", proxy.port or 8080
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme != "http" else 80)


@functools.cache
def hub_reachable(timeout: float = CHECK_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the proxy) opens within `timeout` (name lookup included)."""
    host, port = _target()
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, daemon=True)  # a stuck name lookup ignores socket timeouts
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def set_offline_flags(asked: bool = False) -> str:
    """Set the Hugging Face offline flags when asked or when the hub is unreachable; returns why they are
    (or are not) set: "asked", "set by the environment", "hub unreachable" or "online"."""
    if asked or os.environ.get(OFFLINE_ENV, "").lower() in _TRUE:
        for flag in OFFLINE_FLAGS:
            os.environ[flag] = "1"
        return "asked"
    if any(flag in os.environ for flag in OFFLINE_FLAGS):
        return "set by the environment"
    if hub_reachable():
        return "online"
    for flag in OFFLINE_FLAGS:
        os.environ[flag] = "1"
    return "hub unreachable"
