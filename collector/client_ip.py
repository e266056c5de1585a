"""Who sent a request: the client address (socket peer or trusted X-Forwarded-For) and agent.

Built once per request by the handler and handed to enrichment. X-Forwarded-For is believed
only when the socket peer is a configured proxy, and then only up to the first hop that is not
one of ours. This module must not read settings or the environment beyond what it is given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What anonymisation keeps of an address: the same prefixes Google Analytics and Matomo use.
IPV4_KEEP_BITS = 24
IPV6_KEEP_BITS = 48


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the collector knows about the sender of one request (the same for all its events)."""

    ip: str | None = None
    user_agent: str | None = None


def parse_networks(spec: str | None) -> tuple[IpNetwork, ...]:
    """`10.0.0.0/8, 192.168.1.7` -> networks; raises ValueError naming the bad entry."""
    if not spec:
        return ()
    networks = []
    for entry in spec.split(","):
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"`{text}` is not an IP address or CIDR network") from exc
    return tuple(networks)


class ClientIdentifier:
    """Reads the client address and user agent of a request, under the collector's settings."""

    def __init__(self, trusted_proxies: Sequence[IpNetwork] = (), *, anonymize: bool = True):
        self._trusted = tuple(trusted_proxies)
        self._anonymize = anonymize

    def context(
        self, peer: str | None, forwarded_for: Iterable[str] = (), user_agent: str | None = None
    ) -> RequestContext:
        """`peer` is the socket's address; `forwarded_for` every X-Forwarded-For header value."""
        address = self._client_address(peer, forwarded_for)
        if address is None:
            return RequestContext(None, user_agent)
        return RequestContext(str(anonymize(address) if self._anonymize else address), user_agent)

    def _is_trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self._trusted)

    def _client_address(self, peer: str | None, forwarded_for: Iterable[str]) -> IpAddress | None:
        address = _parse(peer)
        if address is None or not self._trusted or not self._is_trusted(address):
            return address  # a direct client: its headers are its own claims, ignored
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        # Right to left: each hop was appended by the proxy to its right, which we trust; the
        # first hop that is not one of our proxies is the client. A hop we cannot parse ends
        # the walk at the last address we could vouch for.
        for hop in reversed(hops):
            parsed = _parse(hop)
            if parsed is None:
                break
            address = parsed
            if not self._is_trusted(parsed):
                break
        return address


def anonymize(address: IpAddress) -> IpAddress:
    """The network part only: IPv4 to /24, IPv6 to /48."""
    bits = IPV4_KEEP_BITS if address.version == 4 else IPV6_KEEP_BITS
    return ipaddress.ip_network((address, bits), strict=False).network_address


def _parse(text: str | None) -> IpAddress | None:
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
        if address.scope_id is not None:
            # `fe80::1%eth0`: the zone names an interface of the sender, arbitrary text that
            # means nothing here; keep the address only
            return ipaddress.IPv6Address(address.packed)
    return address
