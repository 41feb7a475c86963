"""Finding and creating folders of a Graph mailbox: well-known names, display-name paths, stage-named errors."""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any

from ticketmail.errors import SourceError
from ticketmail.sources._graph_http import GraphClient, body_code, mailbox_missing, quote_segment

__all__ = ["WELL_KNOWN_FOLDERS", "Folders"]

log = logging.getLogger("ticketmail.sources.graph")

WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
        "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
        "sentitems", "serverfailures", "syncissues",
    }
)  # fmt: skip
"""Graph's well-known folder names (case-insensitive; usable in place of a folder id)."""


class Folders:
    """Folder look-ups of one Graph session."""

    def __init__(self, graph: GraphClient) -> None:
        self.graph = graph

    def folder_url(self, segment: str) -> str:
        return f"{self.graph.user_path}/mailFolders/{quote_segment(segment)}"

    def get_folder(self, url: str, what: str) -> tuple[int, Any]:
        return self.graph.json("GET", url + "?$select=id,displayName,totalItemCount,unreadItemCount", what=what)

    def refused(self, status: int, what: str) -> SourceError:
        if status == 403:
            return self.graph.error(
                f"Microsoft Graph denied access to {self.graph.mailbox} while {what} (403): the app needs the "
                "Mail.ReadWrite permission (application or delegated) with admin consent, and an application "
                "access policy, if one is set, must include this mailbox",
                "permission",
            )
        return self.graph.error(f"Microsoft Graph answered HTTP {status} while {what}", "fetch")

    def resolve_folder(self, folder: str, *, stage: str) -> tuple[str, Any]:
        """`(folder id or well-known name, folder resource or None)`; raises `mailbox`/`folder` errors."""
        name = folder.strip().strip("/")
        if name.lower() in WELL_KNOWN_FOLDERS:
            return name.lower(), None
        parent: str | None = None
        info: Any = None
        parts = [p for p in name.split("/") if p]
        if parts and parts[0].lower() in WELL_KNOWN_FOLDERS:  # "Inbox/Support": Inbox by its well-known name
            parent = parts.pop(0).lower()  # (display names are localized: "Posteingang", "Boîte de réception")
        for part in parts:
            where = f"{self.folder_url(parent)}/childFolders" if parent else f"{self.graph.user_path}/mailFolders"
            flt = urllib.parse.quote("displayName eq '" + part.replace("'", "''") + "'")
            url: str | None = f"{where}?$filter={flt}&$select=id,displayName,totalItemCount"
            match: Any = None
            for _page in range(50):  # a server that ignores $filter pages through every folder
                if url is None or match is not None:
                    break
                status, listing = self.graph.json("GET", url, what=f"looking up folder {part!r}")
                if status >= 400:
                    raise self.folder_error(status, name, stage, listing)
                values = listing.get("value") if isinstance(listing, dict) else None
                match = next(
                    (
                        v
                        for v in values or []
                        if isinstance(v, dict)
                        and isinstance(v.get("id"), str)
                        and str(v.get("displayName", "")).casefold() == part.casefold()
                    ),
                    None,
                )
                following = listing.get("@odata.nextLink") if isinstance(listing, dict) else None
                url = following if isinstance(following, str) and following else None
            if match is None:
                raise self.folder_error(404, name, stage)
            parent, info = match["id"], match
        if parent is None:  # an empty path
            raise self.folder_error(404, name, stage)
        return parent, info

    def folder_error(self, status: int, name: str, stage: str, body: Any = None) -> SourceError:
        if status == 404 and mailbox_missing(body):
            return self.graph.error(
                f"mailbox {self.graph.mailbox!r} was not found by Microsoft Graph (404{body_code(body)}): check "
                "the address; a shared mailbox needs its own address, and the mailbox must be in Exchange Online",
                "mailbox",
            )
        if status == 404:
            return self.graph.error(
                f"folder {name!r} does not exist in mailbox {self.graph.mailbox!r} (use a well-known name such "
                "as Inbox, or the display-name path, e.g. 'Inbox/Support')",
                stage,
            )
        return self.refused(status, f"opening folder {name!r}")

    def ensure_folder(self, name: str) -> str:
        """The id of folder `name` (a well-known name or a display-name path), created when missing.

        Like the IMAP source, a missing target of `after = "move:F"` (or the quarantine folder) is created:
        its last path segment under the folder its parents name (the top level for a single name).

        Raises:
            SourceError: `ack`: the folder could not be found nor created.
        """
        try:
            folder_id, _ = self.resolve_folder(name, stage="ack")
            return folder_id
        except SourceError as exc:
            if exc.stage != "ack":
                raise
        parts = [p for p in name.strip().strip("/").split("/") if p]
        parent_id = self.resolve_folder("/".join(parts[:-1]), stage="ack")[0] if len(parts) > 1 else None
        where = f"{self.folder_url(parent_id)}/childFolders" if parent_id else f"{self.graph.user_path}/mailFolders"
        status, data = self.graph.json(
            "POST", where, what=f"creating folder {name!r}", stage="ack", json_body={"displayName": parts[-1]}
        )
        if status == 409:  # created meanwhile by another worker
            return self.resolve_folder(name, stage="ack")[0]
        if status >= 400 or not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise self.graph.error(f"cannot create folder {name!r} (HTTP {status}{body_code(data)})", "ack")
        folder_id = data["id"]
        log.info("graph %s: created folder %r", self.graph.config.name, name)
        return str(folder_id)
