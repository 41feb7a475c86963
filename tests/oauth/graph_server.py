"""A Microsoft Graph-compatible mail server for the tests: the documented contract of the endpoints used.

Real HTTP on loopback (``ThreadingHTTPServer``, HTTP/1.1 keep-alive), following Microsoft's documentation:

* ``GET /v1.0/users/{mailbox}/mailFolders/{id|well-known name}``; ``GET .../mailFolders?$filter=displayName eq
  'X'`` and ``.../mailFolders/{id}/childFolders?$filter=...``; ``POST .../mailFolders`` (create);
* ``GET .../mailFolders/{id}/messages/delta``: rounds of pages of at most ``odata.maxpagesize`` (``Prefer``;
  default 10) entries linked by ``@odata.nextLink`` (``$skiptoken``), the last page with
  ``@odata.deltaLink`` (``$deltatoken``); later rounds return messages added or changed since, and
  ``@removed`` entries (``{"reason": "deleted"}``) for messages that left the folder; an expired token
  answers ``410 Gone`` (``SyncStateNotFound``);
* ``GET .../messages/{id}/$value``: the MIME bytes (``Content-Length``);
* ``PATCH .../messages/{id}`` (``isRead``), ``POST .../messages/{id}/move`` (``destinationId``: an id or a
  well-known name; ``201``), ``DELETE .../messages/{id}`` (``204``; the message goes to Deleted Items);
* ids are immutable when the request says ``Prefer: IdType="ImmutableId"`` (counted otherwise, see
  ``without_immutable``);
* every request needs ``Authorization: Bearer``: the token is checked with RFC 7662 introspection at the OAuth
  server (cached until its ``exp``); unknown or expired -> ``401 InvalidAuthenticationToken``; a user without
  access to the mailbox -> ``403 ErrorAccessDenied``; unknown mailbox -> ``404 ErrorInvalidUser``;
* throttling: :meth:`GraphServer.throttle` makes the next N requests answer ``429`` (or ``503``) with
  ``Retry-After``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WELL_KNOWN = ("inbox", "deleteditems", "archive", "drafts", "sentitems", "junkemail", "outbox")


class Folder:
    def __init__(self, folder_id: str, name: str, parent: str | None) -> None:
        self.id = folder_id
        self.name = name
        self.parent = parent
        self.messages: dict[str, Message] = {}
        self.log: list[tuple[int, str]] = []  # (sequence, message id): added, changed or removed


class Message:
    def __init__(self, message_id: str, raw: bytes, folder: str) -> None:
        self.id = message_id
        self.raw = raw
        self.folder = folder
        self.is_read = False

    def resource(self) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.message",
            "id": self.id,
            "isRead": self.is_read,
            "parentFolderId": self.folder,
        }


class Mailbox:
    def __init__(self, address: str, ids: Any) -> None:
        self.address = address
        self.folders: dict[str, Folder] = {}
        self.well_known: dict[str, str] = {}
        root = Folder(f"AAMkRoot{next(ids)}", "Top of Information Store", None)
        self.folders[root.id] = root
        self.well_known["msgfolderroot"] = root.id
        for name in WELL_KNOWN:
            folder = Folder(f"AAMkF{next(ids)}", {"inbox": "Inbox", "deleteditems": "Deleted Items"}.get(name, name),
                            root.id)  # fmt: skip
            self.folders[folder.id] = folder
            self.well_known[name] = folder.id


class GraphServer:
    """The server (see the module docstring). ``close()`` stops it."""

    def __init__(self, introspection_url: str) -> None:
        self.lock = threading.RLock()
        self.introspection_url = introspection_url
        self.mailboxes: dict[str, Mailbox] = {}
        self.app_principals: set[str] = set()  # introspected users with application access to every mailbox
        self.delegates: set[tuple[str, str]] = set()  # (user, mailbox) delegated access
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._rounds: dict[str, tuple[str, str, list[str], int]] = {}  # skiptoken -> (mailbox, folder, ids, seq)
        self._token_cache: dict[str, tuple[str | None, float]] = {}
        self._throttle: list[tuple[int, int]] = []  # (status, retry-after) per upcoming request
        self.min_valid_delta = 0
        self.requests = 0
        self.throttled = 0
        self.without_immutable = 0
        self.value_requests = 0
        self.delta_requests = 0
        self.introspections = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1.0"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="graph-test-server", daemon=True)
        self.thread.start()

    # -- test helpers -----------------------------------------------------------------------------------

    def add_mailbox(self, address: str) -> Mailbox:
        with self.lock:
            box = self.mailboxes[address.lower()] = Mailbox(address, self._ids)
            return box

    def folder(self, address: str, name: str) -> Folder:
        box = self.mailboxes[address.lower()]
        folder_id = box.well_known.get(name.lower())
        if folder_id is not None:
            return box.folders[folder_id]
        for folder in box.folders.values():
            if folder.name == name:
                return folder
        raise KeyError(name)

    def add_folder(self, address: str, name: str, parent: str = "msgfolderroot") -> Folder:
        with self.lock:
            box = self.mailboxes[address.lower()]
            parent_id = box.well_known.get(parent, parent)
            folder = Folder(f"AAMkF{next(self._ids)}", name, parent_id)
            box.folders[folder.id] = folder
            return folder

    def deliver(self, address: str, raw: bytes, folder: str = "inbox") -> str:
        with self.lock:
            target = self.folder(address, folder)
            message_id = f"AAkALgImm{next(self._ids):08d}" + base64.urlsafe_b64encode(raw[:6]).decode().rstrip("=")
            target.messages[message_id] = Message(message_id, raw, target.id)
            target.log.append((next(self._seq), message_id))
            return message_id

    def messages(self, address: str, folder: str = "inbox") -> list[Message]:
        with self.lock:
            return list(self.folder(address, folder).messages.values())

    def throttle(self, count: int, *, status: int = 429, retry_after: int = 1) -> None:
        """The next ``count`` requests are refused with ``status`` and ``Retry-After: retry_after``."""
        with self.lock:
            self._throttle += [(status, retry_after)] * count

    def expire_delta_tokens(self) -> None:
        """Every delta token issued so far becomes invalid (410 Gone)."""
        with self.lock:
            self.min_valid_delta = next(self._seq)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- internals --------------------------------------------------------------------------------------

    def _user_of(self, token: str) -> str | None:
        now = time.time()
        cached = self._token_cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        parts = urllib.parse.urlsplit(self.introspection_url)
        netloc = parts.hostname or "127.0.0.1"
        url = f"{parts.scheme}://{netloc}:{parts.port}{parts.path}"
        request = urllib.request.Request(url, data=urllib.parse.urlencode({"token": token}).encode(), method="POST")
        credentials = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback test server
            data = json.loads(response.read())
        self.introspections += 1
        if not data.get("active"):
            return None
        user = data.get("username") or data.get("sub") or ""
        exp = float(data.get("exp") or now + 60)
        self._token_cache[token] = (user, exp)
        return user if exp > now else None

    def _message(self, box: Mailbox, message_id: str) -> Message | None:
        for folder in box.folders.values():
            message = folder.messages.get(message_id)
            if message is not None:
                return message
        return None

    def _touch(self, folder: Folder, message_id: str) -> None:
        folder.log.append((next(self._seq), message_id))

    def _folder_json(self, folder: Folder) -> dict[str, Any]:
        return {
            "id": folder.id,
            "displayName": folder.name,
            "parentFolderId": folder.parent,
            "totalItemCount": len(folder.messages),
            "unreadItemCount": sum(1 for m in folder.messages.values() if not m.is_read),
        }

    def _resolve(self, box: Mailbox, ref: str) -> Folder | None:
        folder_id = box.well_known.get(ref.lower(), ref)
        return box.folders.get(folder_id)

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            self.requests += 1
            if self._throttle:
                status, retry = self._throttle.pop(0)
                self.throttled += 1
                return status, _err("TooManyRequests" if status == 429 else "ServiceUnavailable",
                                    "throttled"), {"Retry-After": str(retry)}  # fmt: skip
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return 401, _err("InvalidAuthenticationToken", "Access token is empty."), {}
        user = self._user_of(auth[7:].strip())
        if user is None:
            return 401, _err("InvalidAuthenticationToken", "Access token has expired or is not yet valid."), {}
        if 'IdType="ImmutableId"' not in headers.get("Prefer", ""):
            self.without_immutable += 1
        m = re.match(r"^/v1\.0/users/([^/]+)(/.*)$", path)
        if not m:
            return 400, _err("BadRequest", "Unsupported path"), {}
        address = urllib.parse.unquote(m.group(1)).lower()
        rest = m.group(2)
        with self.lock:
            box = self.mailboxes.get(address)
            if box is None:
                return 404, _err("ErrorInvalidUser", "The requested user is invalid."), {}
            if user not in self.app_principals and user.lower() != address and (user, address) not in self.delegates:
                return 403, _err("ErrorAccessDenied", "Access is denied. Check credentials and try again."), {}
            return self._route(box, method, rest, query, headers, body)

    def _route(
        self, box: Mailbox, method: str, rest: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [urllib.parse.unquote(p) for p in rest.strip("/").split("/")]
        not_found = (404, _err("ErrorItemNotFound", "The specified object was not found in the store."), {})
        if parts[0] == "mailFolders":
            if len(parts) == 1:
                if method == "POST":
                    data = json.loads(body or b"{}")
                    name = data.get("displayName")
                    root = box.folders[box.well_known["msgfolderroot"]]
                    if any(f.name == name and f.parent == root.id for f in box.folders.values()):
                        return 409, _err("ErrorFolderExists", "A folder with the specified name already exists."), {}
                    folder = Folder(f"AAMkF{next(self._ids)}", name, root.id)
                    box.folders[folder.id] = folder
                    return 201, self._folder_json(folder), {}
                return 200, {"value": self._children(box, box.well_known["msgfolderroot"], query)}, {}
            folder = self._resolve(box, parts[1])
            if folder is None:
                return not_found
            if len(parts) == 2:
                return 200, self._folder_json(folder), {}
            if parts[2] == "childFolders" and method == "POST":
                name = json.loads(body or b"{}").get("displayName")
                if any(f.name == name and f.parent == folder.id for f in box.folders.values()):
                    return 409, _err("ErrorFolderExists", "A folder with the specified name already exists."), {}
                child = Folder(f"AAMkF{next(self._ids)}", name, folder.id)
                box.folders[child.id] = child
                return 201, self._folder_json(child), {}
            if parts[2] == "childFolders":
                return 200, {"value": self._children(box, folder.id, query)}, {}
            if parts[2:] == ["messages", "delta"]:
                return self._delta(box, folder, query, headers)
            return not_found
        if parts[0] == "messages" and len(parts) >= 2:
            message = self._message(box, parts[1])
            if message is None:
                return not_found
            folder = box.folders[message.folder]
            if len(parts) == 3 and parts[2] == "$value" and method == "GET":
                self.value_requests += 1
                return 200, message.raw, {"Content-Type": "message/rfc822"}
            if len(parts) == 2 and method == "PATCH":
                data = json.loads(body or b"{}")
                if "isRead" in data:
                    message.is_read = bool(data["isRead"])
                    self._touch(folder, message.id)
                return 200, message.resource(), {}
            if len(parts) == 2 and method == "DELETE":
                self._move(box, message, box.well_known["deleteditems"])
                return 204, None, {}
            if len(parts) == 3 and parts[2] == "move" and method == "POST":
                data = json.loads(body or b"{}")
                target = self._resolve(box, str(data.get("destinationId", "")))
                if target is None:
                    return 400, _err("ErrorInvalidIdMalformed", "Id is malformed."), {}
                self._move(box, message, target.id)
                return 201, message.resource(), {}
        return not_found

    def _move(self, box: Mailbox, message: Message, target_id: str) -> None:
        source = box.folders[message.folder]
        source.messages.pop(message.id, None)
        self._touch(source, message.id)
        target = box.folders[target_id]
        message.folder = target.id
        target.messages[message.id] = message  # immutable id: unchanged by the move
        self._touch(target, message.id)

    def _children(self, box: Mailbox, parent: str, query: dict[str, str]) -> list[dict[str, Any]]:
        flt = query.get("$filter", "")
        m = re.match(r"^displayName eq '((?:[^']|'')*)'$", flt)
        wanted = m.group(1).replace("''", "'") if m else None
        return [
            self._folder_json(f)
            for f in box.folders.values()
            if f.parent == parent and (wanted is None or f.name == wanted)
        ]

    def _delta(
        self, box: Mailbox, folder: Folder, query: dict[str, str], headers: Any
    ) -> tuple[int, Any, dict[str, str]]:
        self.delta_requests += 1
        prefer = headers.get("Prefer", "")
        m = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        page_size = max(1, min(1000, int(m.group(1)))) if m else 10
        base = f"{self.url}/users/{urllib.parse.quote(box.address)}/mailFolders/{folder.id}/messages/delta"
        skip = query.get("$skiptoken")
        if skip is not None:
            state = self._rounds.get(skip)
            if state is None:
                return 410, _err("SyncStateNotFound", "The sync state is not valid."), {}
            _, _, ids, end_seq = state
        else:
            token = query.get("$deltatoken")
            end_seq = next(self._seq)
            if token is None:
                ids = [("A", mid) for mid in folder.messages]  # type: ignore[misc]
            else:
                since = int(token)
                if since < self.min_valid_delta:
                    return 410, _err("SyncStateNotFound", "The sync state generation is not valid."), {}
                changed = list(dict.fromkeys(mid for seq, mid in folder.log if since <= seq < end_seq))
                ids = [("A" if mid in folder.messages else "R", mid) for mid in changed]  # type: ignore[misc]
        chunk, left = ids[:page_size], ids[page_size:]
        value: list[dict[str, Any]] = []
        for kind, mid in chunk:  # type: ignore[misc]
            message = folder.messages.get(mid)
            if kind == "A" and message is not None:
                value.append(message.resource())
            else:
                value.append({"id": mid, "@removed": {"reason": "deleted"}})
        page: dict[str, Any] = {"@odata.context": f"{self.url}/$metadata#Collection(message)", "value": value}
        if left:
            token = f"s{next(self._ids)}"
            self._rounds[token] = (box.address, folder.id, left, end_seq)
            page["@odata.nextLink"] = f"{base}?$skiptoken={token}"
        else:
            page["@odata.deltaLink"] = f"{base}?$deltatoken={end_seq}"
        return 200, page, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def _run(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(split.query))
                try:
                    status, payload, extra = owner.handle(method, split.path, query, self.headers, body)
                except Exception as exc:
                    status, payload, extra = 500, _err("InternalServerError", type(exc).__name__), {}
                if payload is None:
                    raw = b""
                elif isinstance(payload, bytes):
                    raw = payload
                else:
                    raw = json.dumps(payload).encode()
                self.send_response(status)
                if "Content-Type" not in extra and payload is not None:
                    self.send_header("Content-Type", "application/json")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._run("GET")

            def do_POST(self) -> None:
                self._run("POST")

            def do_PATCH(self) -> None:
                self._run("PATCH")

            def do_DELETE(self) -> None:
                self._run("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S")}}}
