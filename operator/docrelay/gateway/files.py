"""`upload_file`: a run stores a file, and gets a signed, expiring URL that apps and Pipedream
actions can fetch (docs/broker.md, "Files").

The file is a ConfigMap (`binaryData`) owned by the run, so it goes with the run; its name
holds the content's hash, so storing the same file twice is one object. The URL is
`{public_url}/v1/files/{namespace}/{name}/{file name}?expires=...&signature=...`: HMAC-SHA256
over namespace, name and expiry, with a key derived from the operator's key ring (which the
broker reads anyway). No other authentication: whoever holds the URL may fetch the file until
it expires, as with a presigned S3 URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from docrelay.models.common import GROUP, VERSION

FILE_PREFIX = "docrelay-file-"
SIGNING_INFO = "docrelay-file-urls"  # the "run uid" the signing key is derived for
MAX_FILE_NAME = 255
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")


class FileRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Upload:
    file_name: str
    content_type: str
    content: bytes


def parse_upload(payload: Any, max_bytes: int) -> Upload:
    if not isinstance(payload, dict):
        raise FileRefused(400, "the request must be a JSON object")
    name = payload.get("fileName")
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_FILE_NAME
        or "/" in name
        or "\\" in name
        or not name.isprintable()
    ):
        raise FileRefused(400, "fileName must be a file name (no slashes, printable)")
    content_type = payload.get("contentType") or "application/octet-stream"
    if not isinstance(content_type, str) or not CONTENT_TYPE.match(content_type):
        raise FileRefused(400, "contentType must be a media type such as application/pdf")
    try:
        content = base64.b64decode(str(payload.get("contentBase64") or ""), validate=True)
    except ValueError:
        raise FileRefused(400, "contentBase64 is not base64") from None
    if len(content) > max_bytes:
        raise FileRefused(413, f"files are at most {max_bytes} bytes")
    return Upload(name, content_type, content)


def file_object_name(run: str, upload: Upload) -> str:
    digest = hashlib.sha256(
        upload.file_name.encode() + b"\0" + upload.content_type.encode() + b"\0" + upload.content
    ).hexdigest()[:16]
    return f"{FILE_PREFIX}{digest}-{run}"[:253]


def file_config_map(
    namespace: str, name: str, run: str, run_uid: str, upload: Upload
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "docrelay.io/run": run,
                "app.kubernetes.io/managed-by": "docrelay",
                "app.kubernetes.io/component": "uploaded-file",
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "IntegrationRun",
                    "name": run,
                    "uid": run_uid,
                }
            ],
        },
        "immutable": True,
        "data": {"fileName": upload.file_name, "contentType": upload.content_type},
        "binaryData": {"content": base64.b64encode(upload.content).decode()},
    }


def signature(key: bytes, namespace: str, name: str, expires: int) -> str:
    message = f"{namespace}/{name}/{expires}".encode()
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def signed_url(
    public_url: str, key: bytes, namespace: str, name: str, file_name: str, expires: int
) -> str:
    return (
        f"{public_url.rstrip('/')}/v1/files/{namespace}/{name}/{quote(file_name, safe='')}"
        f"?expires={expires}&signature={signature(key, namespace, name, expires)}"
    )


def check_signature(
    key: bytes, namespace: str, name: str, expires: str, given: str, now: float
) -> None:
    """403 for a wrong signature or an expired URL; both look the same to the caller."""
    if not expires.isdigit() or not name.startswith(FILE_PREFIX):
        raise FileRefused(403, "not a valid file URL")
    wanted = signature(key, namespace, name, int(expires))
    if not hmac.compare_digest(wanted.encode(), given.encode()) or int(expires) < now:
        raise FileRefused(403, "not a valid file URL, or it has expired")


def stored_file(config_map: Mapping[str, Any] | None) -> Upload:
    if config_map is None:
        raise FileRefused(404, "no such file (it goes with its run)")
    data = config_map.get("data") or {}
    content = base64.b64decode((config_map.get("binaryData") or {}).get("content", ""))
    return Upload(
        str(data.get("fileName", "file")),
        str(data.get("contentType", "application/octet-stream")),
        content,
    )
