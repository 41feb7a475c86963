"""Benchmark: hostile inputs against the parsers, each beside a benign input of the same size, in one run.

Run: ``.venv/bin/python benchmarks/bench_hostile.py [--quick] [--only NAME[,NAME]] [--timeout S]``

For every attack class below, at three sizes, the script builds the attack input and a benign message (or
payload) of the same size, then parses each in a fresh forked child process and records the wall time and
the peak resident memory the first parse added (the time is the best of three parses in that child, one
for parses over a second) (``VmHWM`` after resetting it through ``/proc/self/clear_refs``;
RSS rather than tracemalloc so that memory allocated by the Rust sanitizer counts too). A child that runs
longer than ``--timeout`` seconds is killed and reported as such.

Targets (exit status 1 when one is missed): at every size, each attack parses within 3x the benign input's
time (plus 5 ms, the noise floor of a fork), and its peak added memory is within 4x its input size plus
32 MiB (the interpreter's own churn: imports done lazily, allocator arenas).

Attack classes (``email`` ones go through ``parse_email``, ``json`` ones through ``parse_json``):

* ``ul_nested``, ``div_nested``, ``blockquote_nested``, ``table_nested``: deep HTML nesting;
* ``json_data_url_ul``: the same nesting inside a JSON ``data:text/html`` message;
* ``param_quoted``: a MIME parameter value full of ``\\``, ``*`` and ``(``;
* ``rfc2231``: ``filename*N*=`` continuations;
* ``encoded_words``: encoded words alternating two unknown charsets;
* ``flowed``: one ``format=flowed`` paragraph of soft-broken lines;
* ``folded_header``: a header folded into one-character lines;
* ``many_headers``: hundreds of thousands of header fields;
* ``bare_cr``: a header block whose lines end with bare CR;
* ``near_boundary``: body lines that start like the boundary but are not;
* ``iso2022jp``: ISO-2022-JP text full of invalid escape sequences;
* ``quote_lines``: a reply made of ``>`` quote lines;
* ``references``: a ``References`` field with many message ids;
* ``nested_rfc822``: 25 levels of ``message/rfc822``;
* ``tag_soup``: unclosed tags and quotes;
* ``json_deep``: deeply nested JSON arrays/objects;
* ``json_email``: a megabytes-long ``email`` field;
* ``unclosed_raw``: a `<script` opening repeated with no `>` anywhere after it (each one must not rescan the
  rest of the document);
* ``flat_tags``: hundreds of thousands of sibling inline elements (no depth, all tags);
* ``entity_attrs``: links whose ``href`` values are made of character references;
* ``many_labels``: encoded words, each in its own unknown charset label;
* ``midline_boundary``: lines that end with the boundary without starting with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024
REPEAT = 3  # best of three parses in the same child for the time (a shared machine is noisy); memory: the first


# -- benign inputs ---------------------------------------------------------------------------------------


def benign_email(size: int) -> bytes:
    """A multipart/alternative reply (plain + HTML paragraphs) of about ``size`` bytes."""
    sentence = "The printer on the third floor prints blank pages since this morning, please help. "
    paragraphs = max(1, size // (2 * (len(sentence) * 3 + 8)))
    plain = "\n\n".join(sentence * 3 for _ in range(paragraphs))
    html = "".join(f"<p>{sentence * 3}</p>" for _ in range(paragraphs))
    return (
        "From: Jane <jane@example.com>\r\nTo: desk@example.com\r\nSubject: printer\r\n"
        "Message-ID: <benign@example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n"
        f"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>{html}</body></html>\r\n--b1--\r\n"
    ).encode()


def benign_json(size: int) -> bytes:
    text = "The printer on the third floor prints blank pages. " * max(1, size // 52)
    return json.dumps({"email": "jane@example.com", "name": "Jane", "subject": "printer", "message": text}).encode()


# -- attacks ---------------------------------------------------------------------------------------------

HEAD = "From: Mallory <m@example.com>\r\nTo: desk@example.com\r\nSubject: hi\r\nMessage-ID: <a@example.com>\r\n"


def _html_mail(body: str) -> bytes:
    return (HEAD + "Content-Type: text/html; charset=utf-8\r\n\r\n" + body).encode()


def ul_nested(size: int) -> bytes:
    return _html_mail("<ul><li>" * (size // 8) + "x")


def div_nested(size: int) -> bytes:
    return _html_mail("<div>" * (size // 5) + "x")


def blockquote_nested(size: int) -> bytes:
    return _html_mail("<blockquote>a<br>" * (size // 17) + "x")


def table_nested(size: int) -> bytes:
    return _html_mail("<table><tr><td>" * (size // 15) + "x")


def tag_soup(size: int) -> bytes:
    unit = "<a href='x <b title=\"<i <p>&amp;&#99999999;<"
    return _html_mail(unit * (size // len(unit)))


def json_data_url_ul(size: int) -> bytes:
    html = "<ul><li>" * (size // 8) + "x"
    return json.dumps(
        {"email": "m@example.com", "name": "M", "subject": "hi", "message": "data:text/html," + html}
    ).encode()


def param_quoted(size: int) -> bytes:
    value = "a\\*(" * (size // 4)
    return (HEAD + f'Content-Type: text/plain; name="{value}"\r\n\r\nbody\r\n').encode()


def rfc2231(size: int) -> bytes:
    segments = "".join(f";\r\n filename*{i}*=%41%42" for i in range(size // 22))
    return (HEAD + f"Content-Type: application/octet-stream\r\nContent-Disposition: attachment{segments}"
            "\r\n\r\nbody\r\n").encode()  # fmt: skip


def encoded_words(size: int) -> bytes:
    words = []
    for i in range(size // 45):
        words.append(f"=?x-unknown-{i % 2}?Q?=E4=F6=FC=E4=F6=FC=E4=F6?=")
    return (
        "From: Mallory <m@example.com>\r\nTo: desk@example.com\r\nSubject: " + "\r\n ".join(words) + "\r\n\r\nbody\r\n"
    ).encode()


def flowed(size: int) -> bytes:
    line = "word word word word word word word word word word word word word word word word word word "
    lines = "\r\n".join([line] * (size // (len(line) + 2)))
    return (HEAD + "Content-Type: text/plain; charset=utf-8; format=flowed\r\n\r\n" + lines + "\r\nend\r\n").encode()


def folded_header(size: int) -> bytes:
    return (HEAD.replace("Subject: hi\r\n", "Subject: x" + "\r\n a" * (size // 4) + "\r\n") + "\r\nbody\r\n").encode()


def many_headers(size: int) -> bytes:
    return (HEAD + "X-H: v\r\n" * (size // 8) + "\r\nbody\r\n").encode()


def bare_cr(size: int) -> bytes:
    return (HEAD.replace("\r\n", "\r") + "X-H: v\r" * (size // 7) + "\rbody\r").encode()


def near_boundary(size: int) -> bytes:
    noise = "--bX\r\n" * (size // 6)
    return (
        HEAD + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        + noise + "\r\n--b--\r\n"
    ).encode()  # fmt: skip


def iso2022jp(size: int) -> bytes:
    unit = b"\x1b$B$3$s\x1b(Z\x1b$\x1b(B abc \x1b$(Q\x7f\x7f\x1b"
    return (HEAD + "Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n").encode() + unit * (size // len(unit))


def quote_lines(size: int) -> bytes:
    line = "> quoted history line of an earlier message in this thread\r\n"
    return (HEAD + "Content-Type: text/plain\r\n\r\nThanks!\r\n\r\n" + line * (size // len(line))).encode()


def references(size: int) -> bytes:
    ids = " ".join(f"<{i}@x.example>" for i in range(size // 16))
    return (HEAD + f"References: {ids}\r\n\r\nbody\r\n").encode()


def nested_rfc822(size: int) -> bytes:
    inner = HEAD + "Content-Type: text/plain\r\n\r\n" + "payload line of the innermost message\r\n" * (size // 40)
    data = inner.encode()
    for level in range(25):
        data = (
            f"From: l{level}@example.com\r\nSubject: layer {level}\r\nMessage-ID: <l{level}@example.com>\r\n"
            "Content-Type: message/rfc822\r\n\r\n"
        ).encode() + data
    return data


def json_deep(size: int) -> bytes:
    depth = size // 6
    return b'{"email":"m@example.com","x":' + b'{"a":[' * depth + b"1" + b"]}" * depth + b"}"


def json_email(size: int) -> bytes:
    return json.dumps({"email": "a" * size + "@example.com", "name": "M", "subject": "s", "message": "m"}).encode()


def flat_tags(size: int) -> bytes:
    return _html_mail("<p>" + "<b>x</b><i>y</i> " * (size // 17) + "</p>")


def entity_attrs(size: int) -> bytes:
    unit = '<a href="' + "&#104;&amp;" * 20 + '">l</a> '
    return _html_mail(unit * (size // len(unit)))


def many_labels(size: int) -> bytes:
    words = [f"=?x-label-{i}?Q?=E4=F6=FC?=" for i in range(size // 24)]
    return (
        "From: Mallory <m@example.com>\r\nTo: desk@example.com\r\nSubject: " + "\r\n ".join(words) + "\r\n\r\nbody\r\n"
    ).encode()


def unclosed_raw(size: int) -> bytes:
    return _html_mail("<p>hello</p>" + "<script" * (size // 7))


def midline_boundary(size: int) -> bytes:
    noise = "x--b\r\n" * (size // 6)
    return (
        HEAD + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        + noise + "\r\n--b--\r\n"
    ).encode()  # fmt: skip


ATTACKS: dict[str, tuple[str, Callable[[int], bytes], tuple[int, int, int]]] = {
    "ul_nested": ("email", ul_nested, (20_000, 80_000, 160_000)),
    "div_nested": ("email", div_nested, (50_000, 100_000, 200_000)),
    "blockquote_nested": ("email", blockquote_nested, (20_000, 80_000, 160_000)),
    "table_nested": ("email", table_nested, (20_000, 80_000, 160_000)),
    "tag_soup": ("email", tag_soup, (100_000, 400_000, 1_600_000)),
    "json_data_url_ul": ("json", json_data_url_ul, (20_000, 80_000, 160_000)),
    "param_quoted": ("email", param_quoted, (20_000, 80_000, 200_000)),
    "rfc2231": ("email", rfc2231, (200_000, 800_000, 2_000_000)),
    "encoded_words": ("email", encoded_words, (45_000, 150_000, 450_000)),
    "flowed": ("email", flowed, (700_000, 2_000_000, 6_800_000)),
    "folded_header": ("email", folded_header, (400_000, 1_600_000, 4_000_000)),
    "many_headers": ("email", many_headers, (640_000, 2_000_000, 6_400_000)),
    "bare_cr": ("email", bare_cr, (400_000, 1_600_000, 4_000_000)),
    "near_boundary": ("email", near_boundary, (400_000, 1_600_000, 4_000_000)),
    "iso2022jp": ("email", iso2022jp, (400_000, 1_600_000, 4_000_000)),
    "quote_lines": ("email", quote_lines, (1_000_000, 4_000_000, 18_000_000)),
    "references": ("email", references, (400_000, 1_600_000, 16_000_000)),
    "nested_rfc822": ("email", nested_rfc822, (200_000, 800_000, 2_000_000)),
    "json_deep": ("json", json_deep, (600_000, 2_000_000, 6_000_000)),
    "json_email": ("json", json_email, (1_000_000, 4_000_000, 10_000_000)),
    "flat_tags": ("email", flat_tags, (100_000, 400_000, 1_600_000)),
    "entity_attrs": ("email", entity_attrs, (100_000, 400_000, 1_600_000)),
    "many_labels": ("email", many_labels, (45_000, 150_000, 450_000)),
    "midline_boundary": ("email", midline_boundary, (400_000, 1_600_000, 4_000_000)),
    "unclosed_raw": ("email", unclosed_raw, (100_000, 400_000, 1_600_000)),
}


# -- measurement -----------------------------------------------------------------------------------------


def _kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _child(kind: str, builder_name: str, size: int, queue: Any) -> None:
    if builder_name == "benign":
        data = benign_email(size) if kind == "email" else benign_json(size)
    else:
        data = ATTACKS[builder_name][1](size)
    from ticketmail.errors import TicketmailError
    from ticketmail.parsing import parse_json
    from ticketmail.parsing.mime import parse_email

    parser: Callable[[bytes], object] = parse_email if kind == "email" else parse_json
    with contextlib.suppress(TicketmailError):  # warm up imports and caches on a tiny input
        parser(benign_email(200) if kind == "email" else benign_json(200))
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _kib("VmRSS")
    outcome = "ok"
    best = float("inf")
    peak = 0
    for attempt in range(REPEAT):
        start = time.perf_counter()
        try:
            parser(data)
        except TicketmailError as exc:
            outcome = exc.code
        except Exception as exc:
            outcome = f"CRASH {type(exc).__name__}"
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        if attempt == 0:
            peak = max(0, _kib("VmHWM") - base) * 1024
        if elapsed > 1.0:
            break  # slow inputs are measured once, so the run stays bounded
    queue.put((len(data), best, peak, outcome))


def measure(kind: str, name: str, size: int, timeout: float) -> tuple[int, float | None, int, str]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, name, size, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return size, None, 0, "timeout"
    try:
        return queue.get(timeout=5)
    except Exception:
        return size, None, 0, f"died (exit {proc.exitcode})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest size of each attack")
    parser.add_argument("--only", default="", help="comma-separated attack names")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a parse is killed")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(ATTACKS)
    print(f"{'attack':18s} {'size':>10s} {'benign s':>9s} {'attack s':>9s} {'t ratio':>7s} "
          f"{'peak MiB':>9s} {'mem/in':>7s} {'outcome':>18s}  verdict")  # fmt: skip
    failures = 0
    for name in names:
        kind, _builder, sizes = ATTACKS[name]
        for size in sizes[:1] if args.quick else sizes:
            _, b_time, _b_mem, _ = measure(kind, "benign", size, args.timeout)
            a_size, a_time, a_mem, outcome = measure(kind, name, size, args.timeout)
            if a_time is None or b_time is None:
                ok = False
                ratio_text, time_text = "-", f">{args.timeout:.0f}"
            else:
                ok = a_time <= 3 * b_time + 0.005
                ratio_text, time_text = f"{a_time / b_time:.2f}", f"{a_time:.3f}"
            mem_ok = a_mem <= 4 * a_size + 32 * MiB
            ok = ok and mem_ok and not outcome.startswith(("CRASH", "died"))
            failures += not ok
            print(
                f"{name:18s} {a_size:10d} {b_time or 0:9.3f} {time_text:>9s} {ratio_text:>7s} "
                f"{a_mem / MiB:9.1f} {a_mem / a_size:7.2f} {outcome[:18]:>18s}  {'PASS' if ok else 'FAIL'}",
                flush=True,
            )
    print(f"{failures} measurement(s) missed the targets" if failures else "all attacks within the targets")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
