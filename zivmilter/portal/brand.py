"""The brand's files: each unit's logo and the style sheet that gives the portal its colour
(`/brand/<unit>.png|svg|css`). Built from the configuration once; the URLs carry a version
(core/branding.py), so they may be cached.

A logo is served as an image only: an SVG is checked for active content when the config is
loaded, and here it gets a CSP without scripts and a sandbox, should anyone open it as a page.
The notification loads it from another origin (the reader's mail client), hence the
cross-origin resource policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from zivmilter.core.branding import Brand
from zivmilter.portal.context import Portal

_ASSET_HEADERS = {
    "cache-control": "public, max-age=86400",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "cross-origin-resource-policy": "cross-origin",
    "x-content-type-options": "nosniff",
}


def brand_css(brand: Brand) -> str:
    """The colour as portal.css's accent: buttons (white text on it) and links."""
    return f":root {{ --accent: {brand.color}; --accent-ink: #fff; }}\n"


def assets(portal: Portal) -> dict[str, tuple[bytes, str]]:
    """File name -> (content, content type), for every brand of the configuration."""
    out: dict[str, tuple[bytes, str]] = {}
    for key, brand in portal.cfg.brands.items():
        if brand.logo is not None:
            out[f"{key}.{brand.logo.extension}"] = (brand.logo.data, brand.logo.content_type)
        if brand.color is not None:
            out[f"{key}.css"] = (brand_css(brand).encode(), "text/css; charset=utf-8")
    return out


def brand_asset(portal: Portal) -> Callable[[Request], Awaitable[Response]]:
    files = assets(portal)

    async def handler(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        data, content_type = found
        return Response(data, media_type=content_type, headers=_ASSET_HEADERS)

    return handler
