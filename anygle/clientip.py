"""Which address a request really comes from.

The peer address, unless the peer is a trusted proxy (nginx on this host, by default loopback):
then the right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (addresses
further left are whatever the client claimed), else ``X-Real-IP``.  A spoofed header from an
untrusted peer is ignored, so it cannot dodge a ban.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

DEFAULT_TRUSTED = "127.0.0.0/8,::1/128"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"127.0.0.0/8, ::1/128"`` → networks; raises ValueError on a bad entry."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()
    )


class ClientAddressResolver:
    def __init__(self, trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.trusted = tuple(trusted)

    def is_trusted(self, addr: Address) -> bool:
        return any(addr.version == net.version and addr in net for net in self.trusted)

    def resolve(
        self, peer: str, forwarded_for: Iterable[str] = (), real_ip: str | None = None
    ) -> str:
        """``peer`` is the TCP peer's address; header values as received (several
        ``X-Forwarded-For`` headers count as one comma-joined list)."""
        addr = _parse(peer)
        if addr is None:
            return peer
        if not self.is_trusted(addr):
            return str(addr)
        hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            hop_addr = _parse(hop)
            if hop_addr is None:
                break  # garbage: nothing to the left of it can be believed either
            if not self.is_trusted(hop_addr):
                return str(hop_addr)
            addr = hop_addr
        else:
            if not hops and real_ip:
                real = _parse(real_ip)
                if real is not None:
                    return str(real)
        return str(addr)
