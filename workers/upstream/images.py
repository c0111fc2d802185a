"""Download cover and artist images, then keep them in Cloudflare Images or a local cache.

``download_image`` streams with a byte cap and accepts only bytes that are
really an image.  ``store_image`` uploads to Cloudflare Images when both
``CLOUDFLARE_ACCOUNT_ID`` and ``CLOUDFLARE_API_TOKEN`` are set, and
otherwise writes into ``IMAGE_CACHE_DIR`` under the content's SHA-256, so
storing the same bytes twice gives the same file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import httpx

from models.settings import Settings

from .errors import PermanentUpstreamError, RetryableUpstreamError
from .http import ClientBase, OnRequest, ServiceClient
from .image_sniff import ImageInfo, sniff_image

MAX_IMAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class DownloadedImage:
    """Image bytes and what they are.  ``repr`` leaves the bytes out."""

    url: str
    data: bytes
    info: ImageInfo
    content_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def __repr__(self) -> str:
        return f"DownloadedImage({self.url!r}, {self.info}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class StoredImage:
    """Where an image was kept: ``cache_location`` is ``cloudflare_images`` or ``local``."""

    cache_location: str
    file_size: int
    format: str
    width: int
    height: int
    sha256: str
    cloudflare_id: Optional[str] = None
    cache_path: Optional[str] = None
    delivery_url: Optional[str] = None  # Cloudflare's URL for the image


def cloudflare_configured(settings: Settings) -> bool:
    """True when both Cloudflare Images settings are present."""
    return bool(settings.cloudflare_account_id and settings.cloudflare_api_token)


class ImageClient(ClientBase):
    """Image download and storage.

    Parameters:
        settings: ``http_timeout``, ``image_cache_dir`` and the Cloudflare
            settings (``cloudflare_api_url``, ``cloudflare_account_id``,
            ``cloudflare_api_token``) are used.
        on_request: called with ``"image"`` for each download request and
            ``"cloudflare"`` for each upload.
        transport: an httpx transport to use instead of the network.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_request: Optional[OnRequest] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self._settings = settings
        self._http = ServiceClient(
            "image",
            timeout=settings.http_timeout,
            headers={"User-Agent": settings.musicbrainz_user_agent, "Accept": "image/*"},
            on_request=on_request,
            transport=transport,
            follow_redirects=True,
        )
        self._cloudflare: Optional[ServiceClient] = None
        if cloudflare_configured(settings):
            self._cloudflare = ServiceClient(
                "cloudflare",
                settings.cloudflare_api_url,
                timeout=settings.http_timeout,
                headers={"Authorization": f"Bearer {settings.cloudflare_api_token}"},
                on_request=on_request,
                transport=transport,
                secrets=[settings.cloudflare_api_token, settings.cloudflare_account_id],
            )

    def download(self, url: str, max_bytes: int = MAX_IMAGE_BYTES) -> DownloadedImage:
        """Fetch an image, following redirects.

        Parameters:
            url: an http(s) URL.
            max_bytes: largest image accepted; past it ``response_too_large``
                is raised without reading the rest.

        Raises ``PermanentUpstreamError('not_an_image')`` when the
        Content-Type is not ``image/*`` or the bytes are not PNG, JPEG, GIF or WebP.
        """
        try:
            scheme = httpx.URL(url).scheme
        except (httpx.InvalidURL, TypeError):
            scheme = ""
        if scheme not in ("http", "https"):
            raise PermanentUpstreamError("image URL is not a valid http(s) URL", error_code="invalid_url", service="image")
        with self._http.stream("GET", url) as response:
            where = self._http.where(response)
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                raise PermanentUpstreamError(
                    f"{where} is {content_type or 'untyped'}, not an image", error_code="not_an_image", service="image"
                )
            data = self._http.read_body(response, max_bytes)
        info = sniff_image(data)
        if info is None:
            raise PermanentUpstreamError(
                f"{where} bytes are not a PNG, JPEG, GIF or WebP image", error_code="not_an_image", service="image"
            )
        return DownloadedImage(url=url, data=data, info=info, content_type=content_type)

    def store(self, data: bytes, info: ImageInfo) -> StoredImage:
        """Keep image bytes in Cloudflare Images when configured, else in the local cache.

        Parameters:
            data: the image bytes.
            info: their format and size (from ``sniff_image`` or ``download``).
        """
        digest = hashlib.sha256(data).hexdigest()
        common = dict(file_size=len(data), format=info.format, width=info.width, height=info.height, sha256=digest)
        if self._cloudflare is None:
            path = store_local(data, info, self._settings.image_cache_dir, digest)
            return StoredImage(cache_location="local", cache_path=str(path), **common)
        image_id, delivery_url = self._upload(data, info, digest)
        return StoredImage(
            cache_location="cloudflare_images", cloudflare_id=image_id, delivery_url=delivery_url, **common
        )

    def _upload(self, data: bytes, info: ImageInfo, digest: str) -> tuple[str, Optional[str]]:
        """Upload; returns the image id and its first delivery URL (None when Cloudflare gives none)."""
        path = f"accounts/{self._settings.cloudflare_account_id}/images/v1"
        files = {"file": (f"{digest}.{info.extension}", data, info.mime_type)}
        body = self._cloudflare.request_json("POST", path, files=files)
        body = body if isinstance(body, dict) else {}
        result = body.get("result") if isinstance(body.get("result"), dict) else {}
        image_id = result.get("id")
        if body.get("success") is not True or not isinstance(image_id, str) or not image_id:
            raise self._cloudflare.scrub(
                RetryableUpstreamError(
                    "cloudflare POST images/v1 returned no image id", error_code="malformed_response", service="cloudflare"
                )
            )
        variants = result.get("variants")
        delivery_url = variants[0] if isinstance(variants, list) and variants and isinstance(variants[0], str) else None
        return image_id, delivery_url

    def close(self) -> None:
        if self._cloudflare is not None:
            self._cloudflare.close()
        super().close()


def store_local(data: bytes, info: ImageInfo, cache_dir: str, digest: Optional[str] = None) -> Path:
    """Write ``data`` to ``<cache_dir>/<sha256>.<ext>`` once; return the absolute path.

    An existing file of the same size is kept as it is.  A new one is written
    to a temporary name and renamed, so concurrent writers never leave half a file.
    """
    directory = Path(cache_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{digest or hashlib.sha256(data).hexdigest()}.{info.extension}"
    if path.is_file() and path.stat().st_size == len(data):
        return path
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def download_image(
    url: str,
    max_bytes: int = MAX_IMAGE_BYTES,
    *,
    settings: Settings,
    on_request: Optional[OnRequest] = None,
    transport: Optional[httpx.BaseTransport] = None,
) -> DownloadedImage:
    """One-off ``ImageClient.download``."""
    with ImageClient(settings, on_request=on_request, transport=transport) as client:
        return client.download(url, max_bytes)


def store_image(
    data: bytes,
    info: ImageInfo,
    settings: Settings,
    *,
    on_request: Optional[OnRequest] = None,
    transport: Optional[httpx.BaseTransport] = None,
) -> StoredImage:
    """One-off ``ImageClient.store``."""
    with ImageClient(settings, on_request=on_request, transport=transport) as client:
        return client.store(data, info)
