"""The interactive API docs (`/docs`, Swagger UI), served from this service alone.

Swagger UI's script, stylesheet and icon come from the pinned `fastapi-offline` package and
are served under `/docs-assets`; the page loads nothing from another host. Its own
Content-Security-Policy allows exactly that: scripts from this origin and the page's one
inline start-up script (by its hash), styles and images from this origin (and the inline
styles and data: images Swagger UI draws with), requests to this origin only. ReDoc is off:
one docs page, one set of third-party files to keep current.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

DOCS_URL = "/docs"
ASSETS_URL = "/docs-assets"
ASSETS = Path(str(files("fastapi_offline") / "static"))
"""Swagger UI's dist files (swagger-ui-bundle.js, swagger-ui.css, favicon.png)."""
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _script_hashes(page: str) -> str:
    """The CSP source of each inline script of ``page``: 'sha256-...'."""
    digests = (
        base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        for script in _INLINE_SCRIPT.findall(page)
    )
    return " ".join(f"'sha256-{digest}'" for digest in digests)


def docs_policy(page: str) -> str:
    """The Content-Security-Policy of the docs ``page``: this origin only."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' {_script_hashes(page)}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def install(app: FastAPI) -> None:
    """Serve Swagger UI at `/docs` over the app's OpenAPI document, its files from here.

    The app must be made with ``docs_url=None, redoc_url=None`` (FastAPI's own pages load
    their files from a CDN).
    """
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=None,
            # No badge from Swagger's online validator: nothing leaves for another host.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = docs_policy(bytes(page.body).decode())
        return page
