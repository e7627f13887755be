"""``gateway envoy-config``: a complete Envoy v3 bootstrap that puts the gateway's checks in front of a service.

The YAML is written out as text with comments (not dumped from a dict), so what an operator reads is
what Envoy loads. What it wires, in filter order:

1. a Lua filter that drops every client-sent ``x-gateway-*`` header (a name prefix, which Envoy's
   header mutation cannot match), and ``headers_with_underscores_action: DROP_HEADER`` for the
   ``X_Gateway_*`` spellings, before anything else sees the request;
2. ``envoy.filters.http.ext_authz`` with ``http_service`` on the gateway (``--gateway``): headers
   only, never the body; ``failure_mode_allow: false`` and 503 when the gateway cannot answer, so a
   check that fails never forwards; ``clear_route_cache: true`` so the check's answer picks the route;
3. the router, with two routes: ``x-gateway-route: direct`` (set only by a check that decided the
   request on its headers) goes to the upstream; everything else goes to the gateway's proxy listener
   (``--proxy-gateway``, default ``--gateway``), which decides, forwards and reviews the request
   itself. The default route is the gateway, never the upstream: a check answer without the route
   header cannot reach the service.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from gateway.extauthz.check import (
    CHECK_CLIENT_HEADERS,
    CHECK_REQUEST_HEADERS,
    CHECK_SUCCESS_CLIENT_HEADERS,
    CHECK_UPSTREAM_HEADERS,
    DELEGATION_HEADER,
    ROUTE_DIRECT,
    ROUTE_HEADER,
)


class EnvoyConfigError(ValueError):
    """A command-line value Envoy could not use, worded for one line."""


@dataclass(frozen=True)
class Endpoint:
    """Where a cluster points: scheme, host, port."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, option: str, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EnvoyConfigError(f"{option}: expected an http(s) URL, got {url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise EnvoyConfigError(f"{option}: expected a URL without a path, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise EnvoyConfigError(f"{option}: not a valid port in {url!r}") from None
        return cls(parts.scheme, parts.hostname, port)

    @property
    def is_ip(self) -> bool:
        try:
            ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


STRIP_LUA = """\
                  -- Drop every client-sent X-Gateway-* header before the check: only the gateway's
                  -- check answer may set them (and the route header that picks the upstream).
                  function envoy_on_request(handle)
                    local headers = handle:headers()
                    local doomed = {}
                    for name, _ in pairs(headers) do
                      if string.sub(name, 1, 10) == "x-gateway-" then
                        doomed[#doomed + 1] = name
                      end
                    end
                    for _, name in ipairs(doomed) do
                      headers:remove(name)
                    end
                  end"""


def _patterns(names: tuple[str, ...], indent: int) -> str:
    pad = " " * indent
    return "\n".join(f"{pad}- exact: {name}" for name in names)


def _cluster(name: str, endpoint: Endpoint, comment: str, timeout: str) -> str:
    kind = "STATIC" if endpoint.is_ip else "STRICT_DNS"
    text = f"""\
  # {comment}
  - name: {name}
    type: {kind}
    connect_timeout: {timeout}
    circuit_breakers:
      thresholds: [{{max_connections: 4096, max_pending_requests: 4096, max_requests: 4096}}]
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: "{endpoint.host}", port_value: {endpoint.port}}}}}}}
"""
    if endpoint.scheme == "https":
        text += f"""\
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: "{endpoint.host}"
"""
    return text


def render(
    upstream: str,
    gateway: str,
    *,
    listen_port: int = 10000,
    listen_address: str = "127.0.0.1",
    proxy_gateway: str | None = None,
    admin_port: int | None = None,
    check_timeout: str = "5s",
    route_timeout: str = "60s",
    forward_authorization: bool = False,
    max_header_kb: int = 32,
) -> str:
    """The bootstrap YAML. Raises ``EnvoyConfigError`` for an unusable URL or port."""
    upstream_ep = Endpoint.parse("--upstream", upstream)
    gateway_ep = Endpoint.parse("--gateway", gateway)
    proxy_ep = Endpoint.parse("--proxy-gateway", proxy_gateway) if proxy_gateway else gateway_ep
    if not 0 < listen_port < 65536:
        raise EnvoyConfigError(f"--listen: not a TCP port: {listen_port}")
    if admin_port is not None and not 0 < admin_port < 65536:
        raise EnvoyConfigError(f"--admin-port: not a TCP port: {admin_port}")
    try:
        ip_address(listen_address)
    except ValueError:
        raise EnvoyConfigError(f"--listen-address: not an IP address: {listen_address!r}") from None

    # What the upstream must not receive on a direct route: the routing header, a delegation that
    # could only have come from a client, and (as in proxy mode) the caller's token and purpose
    # header, which the upstream gets as X-Gateway-Principal / X-Gateway-Purpose instead.
    direct_removed = [ROUTE_HEADER, DELEGATION_HEADER, "x-purpose"]
    if not forward_authorization:
        direct_removed.append("authorization")
    removed = ", ".join(direct_removed)
    admin = ""
    if admin_port is not None:
        admin = f"""\
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
"""
    text = f"""\
# Envoy v3 bootstrap generated by `gateway envoy-config`: every request is checked by the
# privacy gateway (ext_authz, headers only) before it may reach the service.
#   upstream:      {upstream_ep.uri}
#   gateway check: {gateway_ep.uri}   (`gateway serve --mode ext-authz`)
#   gateway proxy: {proxy_ep.uri}   (requests whose decision needs a body: masking, record facts, lifting)
{admin}static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: "{listen_address}", port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          use_remote_address: true
          # X_Gateway_Principal reads as X-Gateway-Principal to CGI/WSGI upstreams: drop such names.
          common_http_protocol_options: {{headers_with_underscores_action: DROP_HEADER}}
          # The gateway's server.max_header_bytes: a larger head is refused (431) before any check,
          # so headers the check is not shown cannot carry more than proxy mode would accept.
          max_request_headers_kb: {max_header_kb}
          route_config:
            name: checked
            virtual_hosts:
            - name: checked
              domains: ["*"]
              routes:
              # Decided by the check on its headers alone (the check answered {ROUTE_HEADER}: {ROUTE_DIRECT}).
              - match:
                  prefix: "/"
                  headers: [{{name: {ROUTE_HEADER}, string_match: {{exact: {ROUTE_DIRECT}}}}}]
                route: {{cluster: upstream, timeout: {route_timeout}}}
                request_headers_to_remove: [{removed}]
              # Everything else goes to the gateway's proxy listener, which decides with the body and
              # the upstream's answer (masks, record facts) and audits the request once. It forwards
              # only a request carrying the check's {DELEGATION_HEADER}; anything else it answers as a
              # check (no data) or refuses (403).
              - match: {{prefix: "/"}}
                route: {{cluster: gateway_proxy, timeout: {route_timeout}}}
                request_headers_to_remove: [{ROUTE_HEADER}]
          http_filters:
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
{STRIP_LUA}
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false            # a check that fails never lets the request through
              status_on_error: {{code: ServiceUnavailable}}   # 503 when the gateway cannot be reached
              clear_route_cache: true              # the check's answer picks the route (direct or gateway)
              # The headers the gateway decides on (the body is never sent: with_request_body unset).
              allowed_headers:
                patterns:
{_patterns(CHECK_REQUEST_HEADERS, 18)}
              http_service:
                server_uri: {{uri: "{gateway_ep.uri}", cluster: gateway_check, timeout: {check_timeout}}}
                authorization_response:
                  # Set (never appended) on the request to the upstream or the gateway's proxy listener.
                  allowed_upstream_headers:
                    patterns:
{_patterns(CHECK_UPSTREAM_HEADERS, 20)}
                  # A refusal reaches the client as the gateway answered it: status, problem+json body, these.
                  allowed_client_headers:
                    patterns:
{_patterns(CHECK_CLIENT_HEADERS, 20)}
                  allowed_client_headers_on_success:
                    patterns:
{_patterns(CHECK_SUCCESS_CLIENT_HEADERS, 20)}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{_cluster("upstream", upstream_ep, "the service behind the gateway", "2s")}\
{_cluster("gateway_check", gateway_ep, "the gateway answering checks (gateway serve --mode ext-authz)", "1s")}\
{_cluster("gateway_proxy", proxy_ep, "the gateway's proxy listener for delegated requests", "1s")}"""
    return text


def command(args: argparse.Namespace) -> int:
    try:
        text = render(
            args.upstream,
            args.gateway,
            listen_port=args.listen,
            listen_address=args.listen_address,
            proxy_gateway=args.proxy_gateway,
            admin_port=args.admin_port,
            check_timeout=f"{args.check_timeout:g}s",
            forward_authorization=args.forward_authorization,
        )
    except EnvoyConfigError as exc:
        print(f"gateway envoy-config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "envoy-config", help="print an Envoy v3 bootstrap that checks every request with the gateway (ext_authz)"
    )
    parser.add_argument("--upstream", required=True, help="the service behind Envoy, e.g. http://127.0.0.1:8081")
    parser.add_argument("--gateway", required=True, help="the gateway in ext-authz mode, e.g. http://127.0.0.1:8080")
    parser.add_argument("--listen", type=int, default=10000, help="Envoy's listen port (default 10000)")
    parser.add_argument("--listen-address", default="127.0.0.1", help="Envoy's listen address (default 127.0.0.1)")
    parser.add_argument(
        "--proxy-gateway", help="where requests that need a body are proxied (default: --gateway; any gateway in "
        "ext-authz mode sharing server.delegation_secret)"
    )
    parser.add_argument("--admin-port", type=int, help="Envoy's admin interface on 127.0.0.1 (default: none)")
    parser.add_argument("--check-timeout", type=float, default=5.0, help="seconds a check may take (default 5)")
    parser.add_argument(
        "--forward-authorization", action="store_true",
        help="pass the caller's bearer token to the upstream (upstream.forward_authorization)",
    )
    parser.set_defaults(func=command)
