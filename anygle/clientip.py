"""Which address a request really comes from, and which *abuse key* it counts under.

The peer address, unless the peer is a trusted proxy (nginx on this host, by default loopback):
then the right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy (addresses
further left are whatever the client claimed), else ``X-Real-IP``.  A spoofed header from an
untrusted peer is ignored, so it cannot dodge a ban.

Every per-address rule (connection cap, handshake and HTTP rates, strikes, IP bans) counts by the
abuse key (:func:`abuse_key`), not by the exact address: an IPv6 user normally holds a whole /64
(or more) and can take a fresh address for every connection, so IPv6 addresses count by their
network of ``--ipv6-prefix`` bits, written in CIDR form (``2001:db8:1:2::/64``).  IPv4 addresses
(and IPv4-mapped IPv6 ones) count by themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_TRUSTED = "127.0.0.0/8,::1/128"
DEFAULT_IPV6_PREFIX = 64
MIN_IPV6_PREFIX = 16  # wider than this would lump whole providers together
# End-site assignment sizes (RIPE-690: a customer gets a /48 or /56): besides the client's key,
# admission also looks for bans of its /56 and /48, so an operator can ban a customer's whole
# allocation.  Two more keys to look up per IPv6 client, none per IPv4 client.
WIDER_BAN_PREFIXES = (56, 48)

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


def check_ipv6_prefix(prefix: int) -> int:
    if not MIN_IPV6_PREFIX <= prefix <= 128:
        raise ValueError(f"an IPv6 prefix length must be {MIN_IPV6_PREFIX}..128, not {prefix}")
    return prefix


def _address(text: str) -> Address:
    """An address as written (no port, no brackets); IPv4-mapped IPv6 → IPv4, zone id dropped."""
    addr = ipaddress.ip_address(text.strip())  # ValueError on anything else
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            addr = ipaddress.IPv6Address(int(addr))
    return addr


def _key_of(addr: Address, ipv6_prefix: int) -> str:
    if addr.version == 4 or ipv6_prefix == 128:
        return str(addr)
    return str(ipaddress.IPv6Network((int(addr), ipv6_prefix), strict=False))


def abuse_key(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The key every per-address rule counts ``address`` under.

    ``203.0.113.7`` → ``203.0.113.7``; ``::ffff:203.0.113.7`` → ``203.0.113.7``;
    ``2001:db8:1:2::a`` → ``2001:db8:1:2::/64`` (with ``ipv6_prefix=64``; the address itself
    with 128).  Raises ValueError for anything that is not an IP address.
    """
    return _key_of(_address(address), check_ipv6_prefix(ipv6_prefix))


def ban_keys(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> tuple[str, ...]:
    """The names under ``banned:ips:`` that refuse ``address``, the address itself first: an
    operator's ``SET banned:ips:<exact address>`` keeps working.  IPv6 adds its abuse key and
    the /56 and /48 around it (those wider than the key).  Raises ValueError like
    :func:`abuse_key`."""
    addr = _address(address)
    keys = [str(addr)]
    if addr.version == 6:
        for prefix in (check_ipv6_prefix(ipv6_prefix), *WIDER_BAN_PREFIXES):
            key = _key_of(addr, prefix)
            if prefix <= ipv6_prefix and key not in keys:
                keys.append(key)
    return tuple(keys)


def ban_target(text: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """What a console ban of ``text`` writes under ``banned:ips:`` (ValueError when it would
    never match anyone).

    An address bans its abuse key (an IPv6 address: its /64 by default); ``…/128`` (``…/32``
    for IPv4) bans that one address; an IPv6 CIDR of the abuse prefix, /56 or /48 (those not
    narrower than the prefix) is stored as given, host bits cleared.  Other lengths are refused:
    admission only looks up the names :func:`ban_keys` gives.
    """
    text = text.strip()
    if "/" not in text:
        return abuse_key(text, ipv6_prefix)
    net = ipaddress.ip_network(text, strict=False)
    if net.num_addresses == 1:
        return str(_address(str(net.network_address)))
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is None:
        allowed = sorted({ipv6_prefix, *(p for p in WIDER_BAN_PREFIXES if p < ipv6_prefix)})
        if net.prefixlen in allowed:
            return str(net)
        lengths = ", ".join(f"/{p}" for p in (*reversed(allowed), 128))
        raise ValueError(f"{text}: IPv6 bans are by address or {lengths}")
    raise ValueError(f"{text}: IPv4 bans are by address (or /32)")


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """A client's address as resolved, the key its limits count under, and the ban names that
    refuse it (:func:`ban_keys`); computed once per connection."""

    ip: str
    abuse_key: str
    ban_keys: tuple[str, ...]

    @classmethod
    def of(cls, ip: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> ClientAddress:
        """Something that is not an IP address (a UNIX socket peer) is its own key."""
        try:
            return cls(ip, abuse_key(ip, ipv6_prefix), ban_keys(ip, ipv6_prefix))
        except ValueError:
            return cls(ip, ip, (ip,))


class ClientAddressResolver:
    def __init__(
        self,
        trusted: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        self.trusted = tuple(trusted)
        self.ipv6_prefix = check_ipv6_prefix(ipv6_prefix)

    def client(
        self, peer: str, forwarded_for: Iterable[str] = (), real_ip: str | None = None
    ) -> ClientAddress:
        """:meth:`resolve`, with the abuse key and ban names of the address it finds."""
        return ClientAddress.of(self.resolve(peer, forwarded_for, real_ip), self.ipv6_prefix)

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
