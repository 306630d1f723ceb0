"""Sign in to a Drawbridge route with the official Python MCP SDK's OAuth client.

Usage: oauth_client.py URL CA_FILE EMAIL PASSWORD [CLIENT_METADATA_URL]

`OAuthClientProvider` discovers the relay's metadata from the 401, registers
itself (dynamic client registration) or, given CLIENT_METADATA_URL, uses that
URL as its client_id (a client ID metadata document, which the relay fetches)
and starts the authorization code flow.
Its redirect handler plays the person at the browser, headlessly: it follows
the authorize URL with its own HTTP client (cookies kept), fills the sign-in
form and then the consent form (CSRF token included), and hands the code
from the final redirect to the callback handler. Then the client lists the
tools and calls read_query. Prints one JSON object with what it saw.
"""

import asyncio
import html
import json
import re
import ssl
import sys
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

REDIRECT_URI = "http://127.0.0.1:53682/callback"


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    if not m:
        raise RuntimeError(f"no hidden field {name!r} in the page:\n{page}")
    return html.unescape(m.group(1))


class Browser:
    """The person at the browser: signs in and consents."""

    def __init__(self, tls: ssl.SSLContext, email: str, password: str) -> None:
        self.http = httpx2.AsyncClient(verify=tls, follow_redirects=False, timeout=30)
        self.email = email
        self.password = password
        self.result: asyncio.Future[AuthorizationCodeResult] = asyncio.get_running_loop().create_future()
        self.pages: list[str] = []

    async def redirect_handler(self, authorize_url: str) -> None:
        r = await self.http.get(authorize_url)
        assert r.status_code == 200, f"authorize: {r.status_code} {r.text}"
        assert "Sign in" in r.text, r.text
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
        return await self.result


async def main(url: str, ca: str, email: str, password: str, client_metadata_url: str | None = None) -> None:
    tls = ssl.create_default_context(cafile=ca)
    browser = Browser(tls, email, password)
    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="Drawbridge e2e",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
        client_metadata_url=client_metadata_url,
    )
    http = httpx2.AsyncClient(auth=auth, verify=tls, timeout=httpx2.Timeout(30, read=300))
    async with http, browser.http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            out: dict = {"protocol_version": client.protocol_version}
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            read = await client.call_tool("read_query", {"query": "SELECT COUNT(*) AS n FROM customers"})
            out["read"] = {"is_error": bool(read.is_error), "structured": read.structured_content}
    assert storage.client_info is not None and storage.tokens is not None
    out["client_id"] = storage.client_info.client_id
    out["issuer"] = storage.client_info.issuer
    out["access_token"] = storage.tokens.access_token
    out["refresh_token"] = storage.tokens.refresh_token
    out["scope"] = storage.tokens.scope
    out["pages"] = browser.pages
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
