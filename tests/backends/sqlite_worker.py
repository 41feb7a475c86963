"""Run as a separate process by test_sqlite.py: ingest shared keys into one SQLite file.

usage: python sqlite_worker.py DB WORKER KEYS SEED
Every worker processes every key (in its own random order); exactly one effect per key must survive.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time

from ticketmail.backends import BackendLockedError, NewEntry, NewTicket, ProcessedRecord, SQLiteBackend
from ticketmail.backends.base import AuditRecord
from ticketmail.model import Address, Attachment, Provenance

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SHARED = Attachment("shared.bin", "application/octet-stream", b"same bytes in every process" * 50)


def main() -> int:
    path, worker, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    keys = [f"key{i:04d}" for i in range(count)]
    random.Random(seed).shuffle(keys)
    created = 0
    with SQLiteBackend(path, timeout=30) as backend:
        for key in keys:
            for _attempt in range(50):
                try:
                    with backend.unit_of_work() as uow:
                        if uow.processed(key) is not None:
                            break
                        number = f"N{key}"
                        uow.create_ticket(NewTicket(number, key, Address(f"{key}@example.org"), T0))
                        entry = uow.append_entry(
                            number,
                            NewEntry(
                                "message",
                                None,
                                f"from worker {worker}",
                                T0,
                                message_id=f"<{key}@x>",
                                attachments=(SHARED,),
                            ),
                        )
                        uow.record_processed(ProcessedRecord(key, "created", T0, number, entry.id))
                        uow.record_audit(AuditRecord(T0, "created", key, Provenance("mb", "file", key), number, ()))
                        created += 1
                    break
                except BackendLockedError:
                    time.sleep(0.01)
            else:
                print(f"worker {worker}: gave up on {key}", file=sys.stderr)
                return 1
    print(created)
    return 0


if __name__ == "__main__":
    sys.exit(main())
