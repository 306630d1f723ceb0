"""Scope step-up with the official Python MCP SDK's OAuth client.

Usage: oauth_step_up.py URL CA_FILE EMAIL PASSWORD

A client that asks for least privilege first: its first authorization asks
for `mcp:read` only (the person at the browser sees that request). With that
token it lists the tools and reads; its write (`write_query`) gets 403
`insufficient_scope` naming `mcp`, which the SDK's `OAuthClientProvider`
handles itself: it authorizes again with the scopes united, the person
consents again (the scope grew), and the SDK retries the write.

Prints one JSON object: the scopes of each authorization request, the pages
seen, every 403 challenge the client received, the results and the final
token's scope.
"""

import asyncio
import json
import ssl
import sys
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from oauth_client import REDIRECT_URI, MemoryStorage, hidden


class Browser:
    """The person at the browser: signs in once, consents when asked."""

    def __init__(self, tls: ssl.SSLContext, email: str, password: str) -> None:
        self.http = httpx2.AsyncClient(verify=tls, follow_redirects=False, timeout=30)
        self.email = email
        self.password = password
        self.result: asyncio.Future[AuthorizationCodeResult] | None = None
        self.pages: list[str] = []
        self.requested_scopes: list[str | None] = []

    async def redirect_handler(self, authorize_url: str) -> None:
        self.result = asyncio.get_running_loop().create_future()
        parts = urlsplit(authorize_url)
        query = parse_qs(parts.query)
        if not self.requested_scopes:
            # The client's first request asks for reading only.
            query["scope"] = ["mcp:read"]
            authorize_url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        self.requested_scopes.append(query.get("scope", [None])[0])

        r = await self.http.get(authorize_url)
        assert r.status_code == 200, f"authorize: {r.status_code} {r.text}"
        if "Sign in" in r.text:
            self.pages.append("login")
            r = await self.http.post(
                urljoin(authorize_url, "/oauth/login"),
                data={
                    "csrf": hidden(r.text, "csrf"),
                    "request": hidden(r.text, "request"),
                    "email": self.email,
                    "password": self.password,
                },
            )
            assert r.status_code == 303, f"login: {r.status_code} {r.text}"
            r = await self.http.get(urljoin(authorize_url, r.headers["location"]))
        if r.status_code == 200:
            assert "Allow access?" in r.text, r.text
            self.pages.append("consent")
            self.pages.append(r.text)
            r = await self.http.post(
                urljoin(authorize_url, "/oauth/consent"),
                data={
                    "csrf": hidden(r.text, "csrf"),
                    "request": hidden(r.text, "request"),
                    "decision": "approve",
                },
            )
        assert r.status_code == 303, f"consent: {r.status_code} {r.text}"
        location = r.headers["location"]
        assert location.startswith(REDIRECT_URI + "?"), location
        q = parse_qs(urlsplit(location).query)
        self.result.set_result(
            AuthorizationCodeResult(code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return await self.result


async def main(url: str, ca: str, email: str, password: str) -> None:
    tls = ssl.create_default_context(cafile=ca)
    browser = Browser(tls, email, password)
    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="Drawbridge step-up e2e",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    challenges: list[dict] = []

    async def on_response(response: httpx2.Response) -> None:
        if response.status_code == 403:
            await response.aread()
            challenges.append(
                {
                    "www_authenticate": response.headers.get("www-authenticate"),
                    "body": response.json(),
                }
            )

    http = httpx2.AsyncClient(
        auth=auth,
        verify=tls,
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"response": [on_response]},
    )
    out: dict = {}
    async with http, browser.http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            read = await client.call_tool("read_query", {"query": "SELECT COUNT(*) AS n FROM customers"})
            out["read"] = {"is_error": bool(read.is_error), "structured": read.structured_content}
            out["scope_before_write"] = storage.tokens.scope if storage.tokens else None
            write = await client.call_tool(
                "write_query",
                {"query": "INSERT INTO customers (name, email, city, country, signed_up) VALUES ('Step Up', 'up@example.com', 'Oslo', 'NO', '2026-12-03')"},
            )
            out["write"] = {"is_error": bool(write.is_error), "structured": write.structured_content}
            after = await client.call_tool("read_query", {"query": "SELECT COUNT(*) AS n FROM customers"})
            out["read_after"] = {"is_error": bool(after.is_error), "structured": after.structured_content}
    assert storage.tokens is not None
    out["scope"] = storage.tokens.scope
    out["requested_scopes"] = browser.requested_scopes
    out["pages"] = [p for p in browser.pages if p in ("login", "consent")]
    out["consent_pages"] = [p for p in browser.pages if p not in ("login", "consent")]
    out["challenges"] = challenges
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
