"""Is the Hugging Face Hub reachable? Asked before a download, so that a machine without a
network fails in a second with the line that says what to do, instead of spending half a
minute in the Hub client's retries (or needing ``HF_HUB_OFFLINE=1`` set by hand)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

__all__ = ["hub_unreachable"]

# Seconds to resolve the Hub's name and open a connection to it: a reachable Hub answers in
# well under one; the whole refusal stays under 5 s.
CONNECT_SECONDS = 3.0


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached from here (``HF_HUB_OFFLINE`` set, its name does not
    resolve, or no connection opens to it, or to the HTTPS proxy set for it), or None when a
    connection opens. Only a connection is tried: no request is made."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlsplit(constants.ENDPOINT)
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") if endpoint.scheme == "https" else None
    target = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy and not _bypassed(endpoint.hostname) else endpoint
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return None
    except OSError as exc:
        what = "the proxy " if target is not endpoint else ""
        return f"cannot connect to {what}{host}:{port} ({exc.strerror or exc or 'timed out'})"


def _bypassed(host: str | None) -> bool:
    """Whether ``NO_PROXY`` sends ``host`` around the proxy."""
    names = (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "").split(",")
    return host is not None and any(n.strip() and (n.strip() == "*" or host.endswith(n.strip().lstrip("."))) for n in names)
