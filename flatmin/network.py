"""Whether a service can be reached, asked once with a short timeout before a library would retry for minutes.

The Hugging Face hub (``flatmin.pretrained``) and W&B online (``flatmin.train.loggers``) ask here
first, so that a machine without network gets one sentence at once instead of a long hang and a
traceback.
"""

from __future__ import annotations

import socket
from functools import cache
from urllib.parse import urlparse

#: How long a service may take to accept a connection before flatmin takes it as unreachable.
CONNECT_TIMEOUT_S = 3.0


@cache
def reachable(url: str) -> bool:
    """Whether the host of ``url`` accepts a TCP connection (on its port, else 443 or 80)."""
    address = urlparse(url)
    port = address.port or (80 if address.scheme == "http" else 443)
    try:
        socket.create_connection((address.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
        return True
    except OSError:
        return False
