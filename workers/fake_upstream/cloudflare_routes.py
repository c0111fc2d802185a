"""Fake Cloudflare Images: ``POST /accounts/{account_id}/images/v1`` (multipart ``file``)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import HTTP
from typing import Optional

from workers.upstream.image_sniff import sniff_image

from .exchange import Call, Reply, json_reply
from .state import FakeState


def _failure(status: int, code: int, message: str) -> Reply:
    return json_reply({"result": None, "success": False, "errors": [{"code": code, "message": message}], "messages": []}, status)


def _file_part(call: Call) -> Optional[tuple[str, bytes]]:
    """``(filename, bytes)`` of the multipart ``file`` field, or None."""
    head = f"Content-Type: {call.headers.get('content-type', '')}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + call.body)
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_filename() or "upload", part.get_payload(decode=True) or b""
    return None


def handle_cloudflare(call: Call, state: FakeState) -> Reply:
    """Store an upload in memory and answer with Cloudflare's documented envelope."""
    parts = [p for p in call.path.split("/") if p]
    if len(parts) != 4 or parts[0] != "accounts" or parts[2:] != ["images", "v1"] or call.method != "POST":
        return _failure(404, 7003, f"Could not route to {call.path}, perhaps your object identifier is invalid?")
    if call.headers.get("authorization") != f"Bearer {state.credentials.cloudflare_api_token}":
        return _failure(401, 10000, "Authentication error")
    if parts[1] != state.credentials.cloudflare_account_id:
        return _failure(403, 10000, "Authentication error")
    upload = _file_part(call)
    if upload is None:
        return _failure(400, 5400, "Bad request: no file was provided")
    filename, data = upload
    if sniff_image(data) is None:
        return _failure(415, 9422, "Decode error: image failed to be decoded")
    image_id = str(uuid.uuid4())
    uploaded = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    account_hash = hashlib.sha256(parts[1].encode()).hexdigest()[:22]
    variants = [f"{call.base_url}/images/delivery/{account_hash}/{image_id}/public"]
    result = {"id": image_id, "filename": filename, "uploaded": uploaded, "requireSignedURLs": False, "variants": variants}
    with state.lock:
        state.uploads[image_id] = {**result, "data": data}
    return json_reply({"result": result, "success": True, "errors": [], "messages": []})
