"""Who may talk to ``rcm-dask mcp --http``: a bearer token, and this server's own address.

The HTTP transport listens on 127.0.0.1 only, but every local process, and every web page
a local browser opens, can reach a loopback port. So every request must carry
``Authorization: Bearer TOKEN`` (:class:`BearerTokenGuard`, compared in constant time),
the token the user gave (``--auth-token``, ``RCM_MCP_TOKEN``) or one generated for the
run and printed on stderr (:func:`resolve_token`); and the ``Host`` and ``Origin``
headers must name this very server, ``127.0.0.1:PORT`` or ``localhost:PORT`` with its
own port (:func:`transport_security`, the MCP SDK's DNS-rebinding check, given exact
values instead of its default of any port): a page served by another local port is
refused with 403, a rebound host name with 421.

The SDK's own bearer authentication is built for OAuth (an issuer, scopes, a token
verifier returning access tokens); a static token needs only the small guard here,
which also says in its 401 what to send and where the token comes from.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError

TOKEN_ENV = "RCM_MCP_TOKEN"
"""The variable that sets the token when ``--auth-token`` does not."""

MIN_TOKEN_CHARS = 16
"""A shorter token could be guessed by a local process trying them in turn."""

_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
"""RFC 6750's ``b64token``: what a bearer token may hold and still travel in a header."""

HOW_TO_SEND = (
    "send the header 'Authorization: Bearer <token>' with every request; the token is "
    "the one given with rcm-dask mcp --auth-token or RCM_MCP_TOKEN, else the one the "
    "server generated and printed on its stderr when it started"
)


def resolve_token(
    given: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, bool]:
    """The token HTTP clients must send, and whether it was generated for this run.

    Parameters
    ----------
    given
        ``--auth-token``; blank or None: ``RCM_MCP_TOKEN``, else a new one
        (``secrets.token_urlsafe(32)``: 43 characters, 256 random bits).
    environ
        Where to read ``RCM_MCP_TOKEN`` (default: ``os.environ``).

    Returns
    -------
    (token, generated)

    Raises
    ------
    ConfigError
        A given token is shorter than :data:`MIN_TOKEN_CHARS` or holds characters a
        bearer token cannot (spaces, quotes, non-ASCII...). The message never repeats it.

    Examples
    --------
    >>> resolve_token("correct-horse-battery-staple", {})
    ('correct-horse-battery-staple', False)
    >>> len(resolve_token(None, {})[0]), resolve_token(None, {})[1]
    (43, True)
    """
    environ = os.environ if environ is None else environ
    token = (given or "").strip() or environ.get(TOKEN_ENV, "").strip()
    # the command line's option also reads the variable: name both
    source = f"--auth-token or {TOKEN_ENV}"
    if not token:
        return secrets.token_urlsafe(32), True
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the token ({source}) has {len(token)} characters; give at least "
            f"{MIN_TOKEN_CHARS} (or leave it out and the server generates one)"
        )
    if not _TOKEN_CHARS.match(token):
        raise ConfigError(
            f"the token ({source}) holds characters a bearer token cannot: use letters, "
            "digits and - . _ ~ + / (then = at the end), as secrets.token_urlsafe() does"
        )
    return token, False


def transport_security(port: int) -> TransportSecuritySettings:
    """The MCP SDK's Host and Origin check, allowing this server's own address only.

    ``Host`` must be ``127.0.0.1:PORT`` or ``localhost:PORT``; an ``Origin``, when a
    request has one (a browser's), ``http://127.0.0.1:PORT`` or ``http://localhost:PORT``.
    Anything else, another local port included, is refused (421, 403)."""
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )


async def send_json(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer an HTTP request with a JSON ``body`` (the guards' refusals)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BearerTokenGuard:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer TOKEN``.

    Anything else is answered 401 with a JSON body that says what to send (the token
    itself is never written anywhere). The comparison runs in constant time
    (:func:`hmac.compare_digest`). Lifespan events pass; a websocket (which this
    server does not serve) without the token is closed.

    Parameters
    ----------
    app
        The application to guard (the MCP SDK's streamable HTTP app).
    token
        The token clients must send.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = b"bearer " + token.encode("ascii")

    def _refusal(self, scope: Scope) -> tuple[bytes, str] | None:
        """None when the request carries the token; else the ``WWW-Authenticate``
        challenge and why (for the 401)."""
        realm = b'Bearer realm="rcm-dask"'
        values = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
        if not values:
            return realm, "this server requires a bearer token: " + HOW_TO_SEND
        # one header exactly; the scheme is case-insensitive, the token is not
        head, _, rest = values[0].partition(b" ")
        candidate = head.lower() + b" " + rest.strip(b" ")
        if len(values) == 1 and hmac.compare_digest(candidate, self._expected):
            return None
        invalid = realm + b', error="invalid_request"'
        if head.lower() != b"bearer" or len(values) > 1:
            return invalid, "the Authorization header is not one bearer token: " + HOW_TO_SEND
        return realm + b', error="invalid_token"', "the bearer token is wrong: " + HOW_TO_SEND

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        challenge, why = refusal
        body = json.dumps({"error": "unauthorized", "error_description": why}).encode()
        await send_json(send, 401, body, ((b"www-authenticate", challenge),))
