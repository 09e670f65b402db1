"""An S3-compatible object store on loopback for the team services: moto's S3 in server mode.

``scripts/services.py`` starts it (``python scripts/s3_server.py --port P --data-dir D``). What it
adds to moto's own ``moto_server``:

- **Keys from the environment, checked on every request.** One IAM user, ``track2``, is created
  in-process before the first request with the access key id and secret read from
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` and an inline policy allowing ``s3:*`` only;
  moto's IAM authentication is on from request one (``INITIAL_NO_AUTH_ACTION_COUNT = 0``), so a
  request signed with another key, a wrong secret or no signature at all is answered 403.
- **Presigned URLs.** moto's IAM check knows only the ``Authorization`` header (a presigned URL
  made it fail with a 500). A request signed in its query string (SigV4 presigned, as MLflow's
  server hands out for multipart downloads) is verified here instead: the key id must be ours,
  the signature must match and it must not have expired; then moto serves it without its own check.
- **No control API.** moto's ``/moto-api`` (reset, reset-auth, model dump) would let anyone on the
  host switch authentication off or wipe the store: it is answered 403.
- **Persistence.** moto keeps objects in memory. On SIGTERM/SIGINT every bucket's latest object
  versions are written under ``--data-dir`` (content-addressed blobs and an index per bucket) and
  read back at the next start, so ``make services-stop`` + ``make services`` keep the MLflow
  artifacts and the DVC remote. A SIGKILL loses what was written since the last clean stop.

It is a development / CI stand-in for S3: production uses S3 (or GCS) itself (docs/team.md).
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote

USER = "track2"
POLICY = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>%s</Message></Error>")


def install_credentials(access_key_id: str, secret: str) -> None:
    """Create the one IAM user with the given key pair and switch moto's authentication on."""
    from moto import settings
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("aws", USER)
    iam.put_user_policy(USER, "s3-only", json.dumps(POLICY))
    key = iam.create_access_key(USER)
    iam.access_keys.pop(key.access_key_id, None)
    key.access_key_id, key.secret_access_key = access_key_id, secret
    iam.access_keys[access_key_id] = key
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0


#: Set while a request whose presigned signature :func:`verify_presigned` accepted is served.
_presigned = threading.local()


def trust_presigned_requests() -> None:
    """Let moto skip its own IAM check (header signatures only) for a verified presigned request."""
    from moto.core.authorization import ActionAuthenticatorMixin

    check = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self, iam_request_cls, resource="*"):
        if getattr(_presigned, "verified", False):
            return None
        return check(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def verify_presigned(environ: dict, access_key_id: str, secret: str, now: float | None = None) -> str | None:
    """Check a SigV4 query-string signature (an S3 presigned URL); return None if valid, else why not."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    q = dict(query)
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return "unsupported signature algorithm"
    try:
        key_id, date, region, service, terminal = q["X-Amz-Credential"].split("/")
        amz_date, expires, signed = q["X-Amz-Date"], int(q["X-Amz-Expires"]), q["X-Amz-SignedHeaders"]
        signature = q["X-Amz-Signature"]
    except (KeyError, ValueError):
        return "malformed presigned URL"
    if key_id != access_key_id:
        return "unknown access key"
    if service != "s3":
        return "only S3 requests may be presigned here"
    issued = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    if (time.time() if now is None else now) > issued + expires:
        return "the presigned URL has expired"
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(environ.get("PATH_INFO", "/"))
    path = raw.split("?", 1)[0]
    canonical_query = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in
                               sorted((k, v) for k, v in query if k != "X-Amz-Signature"))
    headers = []
    for name in signed.split(";"):
        value = environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        if name == "content-type":
            value = environ.get("CONTENT_TYPE", "")
        headers.append(f"{name}:{' '.join(value.split())}\n")
    canonical = "\n".join([environ["REQUEST_METHOD"], path, canonical_query, "".join(headers), signed,
                           "UNSIGNED-PAYLOAD"])
    scope = f"{date}/{region}/{service}/{terminal}"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "the signature does not match"


def _backends():
    from moto.s3.models import s3_backends

    for account_id in list(s3_backends.keys()):
        yield account_id, s3_backends[account_id]["aws"]


def save(data_dir: Path) -> int:
    """Write every bucket's latest object versions under ``data_dir``; return the object count."""
    from moto.s3.models import FakeKey

    blobs = data_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict] = {}
    n = 0
    for account_id, backend in _backends():
        for name, bucket in list(backend.buckets.items()):
            objects = {}
            for key_name, key in bucket.keys.items():
                if not isinstance(key, FakeKey):
                    continue  # a delete marker
                value = key.value
                digest = hashlib.sha256(value).hexdigest()
                blob = blobs / digest
                if not blob.exists():
                    tmp = blob.with_suffix(".tmp")
                    tmp.write_bytes(value)
                    tmp.replace(blob)
                objects[key_name] = digest
                n += 1
            index[name] = {"account": account_id, "region": bucket.region_name, "objects": objects}
    tmp = data_dir / "index.json.tmp"
    tmp.write_text(json.dumps(index))
    tmp.replace(data_dir / "index.json")
    live = {d for b in index.values() for d in b["objects"].values()}
    for blob in blobs.iterdir():
        if blob.name not in live:
            blob.unlink()
    return n


def load(data_dir: Path) -> int:
    """Read back what :func:`save` wrote; return the object count."""
    from moto.s3.models import s3_backends

    path = data_dir / "index.json"
    if not path.exists():
        return 0
    n = 0
    for name, b in json.loads(path.read_text()).items():
        backend = s3_backends[b["account"]]["aws"]
        backend.create_bucket(name, b["region"])
        for key_name, digest in b["objects"].items():
            backend.put_object(name, key_name, (data_dir / "blobs" / digest).read_bytes())
            n += 1
    return n


class Guard:
    """WSGI middleware: refuse moto's control API and unsigned requests; verify presigned URLs."""

    def __init__(self, app, access_key_id: str, secret: str):
        self.app, self.key_id, self.secret = app, access_key_id, secret

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if path.startswith("/moto-api"):
            return self.deny(start_response, "moto's control API is disabled")
        if "Signature=" in query and "X-Amz-Signature=" not in query:
            return self.deny(start_response, "only SigV4 presigned URLs are accepted")
        if "X-Amz-Signature=" in query:
            why = verify_presigned(environ, self.key_id, self.secret)
            if why:
                return self.deny(start_response, why)
            _presigned.verified = True
            try:
                return self.app(environ, start_response)
            finally:
                _presigned.verified = False
        if "HTTP_AUTHORIZATION" not in environ:
            return self.deny(start_response, "the request is not signed")
        return self.app(environ, start_response)

    @staticmethod
    def deny(start_response, why: str):
        body = DENIED % why.encode()
        start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                         ("Content-Length", str(len(body)))])
        return [body]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir", type=Path, required=True, help="Where objects persist between runs.")
    args = ap.parse_args(argv)
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        print("error: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set", file=sys.stderr)
        return 2

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    install_credentials(key_id, secret)
    trust_presigned_requests()
    restored = load(args.data_dir)
    app = Guard(DomainDispatcherApplication(create_backend_app), key_id, secret)
    server = make_server(args.host, args.port, app, threaded=True)
    stopping = threading.Event()

    def stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"s3: serving on http://{args.host}:{args.port} ({restored} objects restored)", flush=True)
    server.serve_forever()
    saved = save(args.data_dir)
    print(f"s3: stopped, {saved} objects saved to {args.data_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
