"""Who is the client? The peer address, or ``X-Forwarded-For`` only when the peer is a trusted proxy.

The per-address rate limits are only as good as the address they key on.
``X-Forwarded-For`` is a header any client can write, so believing it from
anyone lets a client pick a fresh address per request and never be limited.
It is believed only when the TCP peer is listed in
``CACHELAB_TRUSTED_PROXIES`` (IPs or CIDRs, parsed by :func:`cachelab.config.parse_networks`;
empty by default, so nobody's):
then the header is read right to left, skipping further trusted hops, and
the first address that is not a trusted proxy is the client — the rightmost
entries are the ones our own proxies appended; anything left of them came
from the client and may be forged.

uvicorn has its own, different rule (it trusts 127.0.0.1 by default), so
``cachelab serve`` and the harness start it with proxy headers off and this
module decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cachelab.config import Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client's address for rate limiting and logs.

    ``forwarded_for`` is every ``X-Forwarded-For`` header value, in order. Without a trusted
    peer the header is ignored. An entry that is not an address ends the walk: everything
    left of it is unverifiable, so the hop that handed it over is taken as the client.
    """
    address = peer or "-"
    if not proxies or not _trusted(address, proxies):
        return address
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if _ip(hop) is None:
            return address
        address = hop
        if not _trusted(hop, proxies):
            return str(_ip(hop))
    return address
