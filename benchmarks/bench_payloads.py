"""Throughput of the payload parsers against the stdlib work they cannot avoid, measured in the same run.

* small ticket (osTicket's example): ``parse_json`` vs ``json.loads`` alone; ``parse_xml`` vs defusedxml
  ``fromstring`` alone. The ratio is the cost of validation and normalization (email-validator dominates).
* 5 MiB attachment: ``parse_json`` vs ``json.loads`` + ``base64.b64decode`` of the same data.
* adversarial: 20 MB of ``[`` (refused by the depth pre-scan) and a 40 MB base64 string over the size
  limit (refused arithmetically, before decoding), vs ``json.loads`` of a same-size flat string.

    .venv/bin/python benchmarks/bench_payloads.py           # full
    .venv/bin/python benchmarks/bench_payloads.py --quick   # fewer repetitions
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import time
import tracemalloc
from collections.abc import Callable

from defusedxml.ElementTree import fromstring

from ticketmail.errors import TicketmailError
from ticketmail.parsing import Limits, parse_json, parse_xml, to_json, to_xml

SMALL = {
    "name": "Angry User",
    "email": "api@osticket.com",
    "phone": "3185558634X123",
    "subject": "Testing API",
    "ip": "123.211.233.122",
    "message": "data:text/html,MESSAGE <b>HERE</b>",
    "attachments": [{"file.txt": "data:text/plain;charset=utf-8,content"}],
}


def timeit(func: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            with contextlib.suppress(TicketmailError):
                func()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def peak(func: Callable[[], object]) -> int:
    tracemalloc.start()
    with contextlib.suppress(TicketmailError):
        func()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def row(name: str, ours: float, base: float) -> None:
    print(f"{name:<44} {ours * 1e6:>12.1f} us  baseline {base * 1e6:>12.1f} us  ratio {ours / base:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    n = 200 if parser.parse_args().quick else 2000

    small_json = json.dumps(SMALL).encode()
    request = parse_json(small_json)
    small_xml = to_xml(request)
    row(
        "small ticket: parse_json vs json.loads",
        timeit(lambda: parse_json(small_json), n),
        timeit(lambda: json.loads(small_json), n),
    )
    row(
        "small ticket: parse_xml vs defusedxml",
        timeit(lambda: parse_xml(small_xml), n),
        timeit(lambda: fromstring(small_xml), n),
    )

    blob = bytes(range(256)) * (5 * 4096)
    big = (
        to_json(
            request.__class__(
                **{**{f: getattr(request, f) for f in ("email", "subject", "message")}, "attachments": ()}
            )
        )[:-1]
        + b', "attachments": [{"big.bin": "data:;base64,'
        + base64.b64encode(blob)
        + b'"}]}'
    )
    reps = max(3, n // 200)
    row(
        "5 MiB attachment: parse_json vs loads+b64decode",
        timeit(lambda: parse_json(big), reps),
        timeit(lambda: base64.b64decode(json.loads(big)["attachments"][0]["big.bin"].split(",", 1)[1]), reps),
    )
    print(
        f"{'5 MiB attachment: peak memory parse_json':<44} {peak(lambda: parse_json(big)) / 2**20:>10.1f} MiB  "
        f"baseline {peak(lambda: json.loads(big)) / 2**20:.1f} MiB (json.loads alone)"
    )

    limits = Limits(max_payload_bytes=64 * 2**20)
    brackets = b"[" * 20_000_000
    staircase = b"[[]," * 5_000_000
    flat = b'"' + b"a" * 19_999_998 + b'"'
    row(
        "20 MB of '[': refused vs loads of a flat string",
        timeit(lambda: parse_json(brackets, limits=limits), 1),
        timeit(lambda: json.loads(flat), 1),
    )
    row(
        "20 MB of '[[],': refused vs loads of flat",
        timeit(lambda: parse_json(staircase, limits=limits), 1),
        timeit(lambda: json.loads(flat), 1),
    )
    huge = (
        b'{"name":"a","email":"a@b.com","subject":"s","message":"m","attachments":[{"x":"data:;base64,'
        + b"A" * 40_000_000
        + b'"}]}'
    )
    row(
        "40 MB base64 over limit: refused vs loads",
        timeit(lambda: parse_json(huge, limits=limits), 1),
        timeit(lambda: json.loads(huge), 1),
    )
    ours = peak(lambda: parse_json(huge, limits=limits)) / 2**20
    base = peak(lambda: json.loads(huge)) / 2**20
    print(f"{'40 MB base64 over limit: peak memory':<44} {ours:>10.1f} MiB  baseline {base:.1f} MiB (json.loads alone)")
    assert parse_xml(to_xml(request)) == request


if __name__ == "__main__":
    main()
