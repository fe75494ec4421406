#!/usr/bin/env python3
"""Self-test for parse_report.py.

Builds journal reports by hand (raw CRLF bytes) around messages from
tests/fixtures/messages/ and checks the verdicts: well-formed reports must
pass, broken ones (missing header, wrong part count, altered original, ...)
must fail with the expected reason.  Also exercises the command line
(exit status, "OK" + JSON output).

Usage:  python3 tests/tools/test_parse_report.py
Prints "N passed, M failed"; exit status 1 if anything failed.
"""

from __future__ import annotations

import json
import quopri
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import parse_report  # noqa: E402
from parse_report import ReportError, check_report  # noqa: E402

CORPUS = HERE.parent / "fixtures" / "messages"
BOUNDARY = "----=_Journal_5f0c_0001"

RECEIVED = (
    b"Received: from mail.example.net (mail.example.net [198.51.100.23])\r\n"
    b"\tby gateway.example.com (mailjournal) with ESMTP id 7F3A2B;\r\n"
    b"\tMon, 11 Mar 2024 09:30:16 +0100\r\n"
)

DEFAULT_LINES = [
    "Sender: bob@example.net",
    "Subject: Dot-stuffing torture test",
    "Message-Id: <abc.123@example.net>",
    "To: alice@example.com",
]


def corpus(name_prefix: str) -> bytes:
    matches = sorted(CORPUS.glob(f"{name_prefix}*.eml"))
    assert matches, f"corpus message {name_prefix}* not found - run tests/fixtures/gen_messages.py"
    return matches[0].read_bytes()


def text_part(lines=None, *, cte="7bit", ctype="text/plain; charset=utf-8") -> bytes:
    lines = DEFAULT_LINES if lines is None else lines
    text = "".join(l + "\r\n" for l in lines).encode("utf-8")
    hdr = f"Content-Type: {ctype}\r\n"
    if cte == "quoted-printable":
        body = quopri.encodestring(text.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    else:
        body = text
    if cte is not None:
        hdr += f"Content-Transfer-Encoding: {cte}\r\n"
    return hdr.encode("ascii") + b"\r\n" + body


def rfc822_part(original: bytes, *, prepend=RECEIVED, ctype="message/rfc822", cte=None) -> bytes:
    hdr = f"Content-Type: {ctype}\r\n"
    if cte:
        hdr += f"Content-Transfer-Encoding: {cte}\r\n"
    return hdr.encode("ascii") + b"\r\n" + prepend + original


def build_report(
    original: bytes,
    *,
    headers: list[tuple[str, str]] | None = None,
    omit: tuple[str, ...] = (),
    parts: list[bytes] | None = None,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    padding: bytes = b"",
    boundary: str = BOUNDARY,
    close: bool = True,
) -> bytes:
    hdrs = headers if headers is not None else [
        ("From", "Journal Agent <journal-agent@example.com>"),
        ("To", "journal@example.com"),
        ("Subject", "Dot-stuffing torture test"),
        ("Date", "Mon, 03 Mar 2025 03:03:04 +0100"),
        ("Message-ID", "<journal.0001@gateway.example.com>"),
        ("X-MS-Journal-Report", ""),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
    ]
    out = bytearray()
    for name, value in hdrs:
        if name.lower() in (o.lower() for o in omit):
            continue
        out += f"{name}:{' ' + value if value else ''}\r\n".encode("ascii")
    out += b"\r\n" + preamble
    if parts is None:
        parts = [text_part(), rfc822_part(original)]
    dash = b"--" + boundary.encode("ascii")
    for p in parts:
        # the CRLF after each part's content is the one that belongs to the
        # following delimiter line (RFC 2046 5.1.1)
        out += dash + padding + b"\r\n" + p + b"\r\n"
    if close:
        out += dash + b"--" + padding + b"\r\n"
    out += epilogue
    return bytes(out)


# ---------------------------------------------------------------------------

CASES: list[tuple[str, object]] = []


def case(name):
    def deco(fn):
        CASES.append((name, fn))
        return fn

    return deco


def expect_ok(report: bytes, original: bytes):
    res = check_report(report, original)
    assert res.lines[0].startswith("Sender: "), res.lines
    return res


def expect_fail(report: bytes, original: bytes, needle: str):
    try:
        check_report(report, original)
    except ReportError as e:
        assert needle.lower() in str(e).lower(), f"expected {needle!r} in {e!s}"
        return str(e)
    raise AssertionError(f"report accepted, expected failure mentioning {needle!r}")


ORIG = corpus("33-")  # dot lines incl. exactly ".."


@case("valid report (7bit text part, folded Received prepended)")
def _():
    res = expect_ok(build_report(ORIG), ORIG)
    assert res.prefix == RECEIVED
    assert res.lines == DEFAULT_LINES


@case("valid report: every corpus message, with and without Received")
def _():
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) >= 32, len(files)
    for f in files:
        orig = f.read_bytes()
        for prepend in (b"", RECEIVED):
            rep = build_report(orig, parts=[text_part(), rfc822_part(orig, prepend=prepend)])
            res = check_report(rep, orig)
            assert res.prefix == prepend, f.name


@case("valid report: quoted-printable UTF-8 text part, non-UTF-8 (Latin-1) original")
def _():
    orig = corpus("30-")
    lines = ["Sender: stephane@example.net", "Subject: Grüße aus Straßburg",
             "Message-Id: <x@example.net>", "To: sabine@example.com"]
    rep = build_report(orig, parts=[text_part(lines, cte="quoted-printable"), rfc822_part(orig)])
    res = expect_ok(rep, orig)
    assert res.lines == lines, res.lines


@case("valid report: no CTE header on text part, preamble, epilogue, transport padding")
def _():
    rep = build_report(ORIG, parts=[text_part(cte=None), rfc822_part(ORIG)],
                       preamble=b"This is a journal report.\r\n",
                       epilogue=b"epilogue text\r\n", padding=b" \t")
    expect_ok(rep, ORIG)


@case("valid report: empty-body and no-separator originals, Message-Id: Unknown")
def _():
    for prefix in ("23-", "39-", "31-"):
        orig = corpus(prefix)
        lines = ["Sender: x@example.net", "Subject: ", "Message-Id: Unknown", "To: y@example.com"]
        expect_ok(build_report(orig, parts=[text_part(lines), rfc822_part(orig)]), orig)


@case("valid report: MIME-Version with comment, header names in other case")
def _():
    hdrs = [("FROM", "journal@example.com"), ("subject", "s"), ("message-id", "<a@b.example.com>"),
            ("x-ms-journal-report", ""), ("Mime-Version", "1.0 (produced by mailjournal)"),
            ("content-type", f"multipart/mixed;\r\n boundary={BOUNDARY}")]
    expect_ok(build_report(ORIG, headers=hdrs), ORIG)


@case("missing X-MS-Journal-Report header")
def _():
    expect_fail(build_report(ORIG, omit=("X-MS-Journal-Report",)), ORIG, "X-MS-Journal-Report")


@case("missing Message-ID / From / Subject / MIME-Version headers")
def _():
    for h in ("Message-ID", "From", "Subject", "MIME-Version"):
        expect_fail(build_report(ORIG, omit=(h,)), ORIG, f"missing header {h}")


@case("MIME-Version 1.1 rejected")
def _():
    hdrs = [("From", "a@example.com"), ("Subject", "s"), ("Message-ID", "<a@example.com>"),
            ("X-MS-Journal-Report", ""), ("MIME-Version", "1.1"),
            ("Content-Type", f'multipart/mixed; boundary="{BOUNDARY}"')]
    expect_fail(build_report(ORIG, headers=hdrs), ORIG, "MIME-Version must be 1.0")


@case("Content-Type multipart/alternative rejected")
def _():
    hdrs = [("From", "a@example.com"), ("Subject", "s"), ("Message-ID", "<a@example.com>"),
            ("X-MS-Journal-Report", ""), ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{BOUNDARY}"')]
    expect_fail(build_report(ORIG, headers=hdrs), ORIG, "multipart/mixed")


@case("wrong part count: 1 and 3 parts")
def _():
    expect_fail(build_report(ORIG, parts=[text_part()]), ORIG, "exactly 2 parts")
    expect_fail(build_report(ORIG, parts=[text_part(), rfc822_part(ORIG), text_part()]), ORIG,
                "exactly 2 parts")


@case("missing close delimiter")
def _():
    expect_fail(build_report(ORIG, close=False), ORIG, "CloseBoundaryNotFound")


@case("text part: wrong type / charset / encoding / 8bit-in-7bit")
def _():
    expect_fail(build_report(ORIG, parts=[text_part(ctype="text/html; charset=utf-8"), rfc822_part(ORIG)]),
                ORIG, "text/plain")
    expect_fail(build_report(ORIG, parts=[text_part(ctype="text/plain; charset=iso-8859-1"), rfc822_part(ORIG)]),
                ORIG, "charset=utf-8")
    expect_fail(build_report(ORIG, parts=[text_part(ctype="text/plain"), rfc822_part(ORIG)]),
                ORIG, "charset=utf-8")
    expect_fail(build_report(ORIG, parts=[text_part(cte="base64"), rfc822_part(ORIG)]),
                ORIG, "7bit or quoted-printable")
    lines = ["Sender: a@example.com", "Subject: Grüße", "Message-Id: <a@example.com>"]
    expect_fail(build_report(ORIG, parts=[text_part(lines, cte="7bit"), rfc822_part(ORIG)]),
                ORIG, "8-bit")


@case("text part: first line not Sender, missing Message-Id / Subject lines")
def _():
    swapped = [DEFAULT_LINES[1], DEFAULT_LINES[0]] + DEFAULT_LINES[2:]
    expect_fail(build_report(ORIG, parts=[text_part(swapped), rfc822_part(ORIG)]), ORIG, "Sender: ")
    no_mid = [l for l in DEFAULT_LINES if not l.startswith("Message-Id")]
    expect_fail(build_report(ORIG, parts=[text_part(no_mid), rfc822_part(ORIG)]), ORIG, "Message-Id: ")
    wrong_case = [l.replace("Message-Id:", "Message-ID:") for l in DEFAULT_LINES]
    expect_fail(build_report(ORIG, parts=[text_part(wrong_case), rfc822_part(ORIG)]), ORIG, "Message-Id: ")
    no_subj = [l for l in DEFAULT_LINES if not l.startswith("Subject")]
    expect_fail(build_report(ORIG, parts=[text_part(no_subj), rfc822_part(ORIG)]), ORIG, "Subject: ")


@case("part 2: wrong content type, base64-encoded message/rfc822")
def _():
    expect_fail(build_report(ORIG, parts=[text_part(), rfc822_part(ORIG, ctype="application/octet-stream")]),
                ORIG, "message/rfc822")
    expect_fail(build_report(ORIG, parts=[text_part(), rfc822_part(ORIG, cte="base64")]),
                ORIG, "must not be encoded")


@case("altered original: one byte flipped")
def _():
    mid = len(ORIG) // 2
    bad = ORIG[:mid] + bytes([ORIG[mid] ^ 0x01]) + ORIG[mid + 1:]
    msg = expect_fail(build_report(bad), ORIG, "does not end with ORIGINAL.eml")
    assert f"offset {mid}" in msg, msg


@case("altered original: missing final CRLF, extra trailing CRLF")
def _():
    expect_fail(build_report(ORIG[:-2]), ORIG, "ORIGINAL.eml")
    expect_fail(build_report(ORIG + b"\r\n"), ORIG, "ORIGINAL.eml")


@case("altered original: dot-stuffing not undone")
def _():
    stuffed = ORIG.replace(b"\r\n.", b"\r\n..")
    expect_fail(build_report(stuffed), ORIG, "dot-stuffing")


@case("altered original: trailing whitespace stripped, header case normalised, Latin-1 transcoded")
def _():
    o22 = corpus("22-")
    stripped = b"\r\n".join(l.rstrip(b" \t") for l in o22.split(b"\r\n"))
    expect_fail(build_report(stripped), o22, "ORIGINAL.eml")
    o19 = corpus("19-")
    expect_fail(build_report(o19.replace(b"SUBJECT:", b"Subject:")), o19, "ORIGINAL.eml")
    o30 = corpus("30-")
    expect_fail(build_report(o30.decode("latin-1").encode("utf-8")), o30, "ORIGINAL.eml")


@case("report with bare LF line endings")
def _():
    rep = build_report(ORIG).replace(b"\r\n", b"\n")
    expect_fail(rep, ORIG, "bare LF")


@case("prefix other than one Received header rejected")
def _():
    expect_fail(build_report(ORIG, parts=[text_part(), rfc822_part(ORIG, prepend=b"X-Foo: bar\r\n")]),
                ORIG, "Received")
    expect_fail(build_report(ORIG, parts=[text_part(), rfc822_part(ORIG, prepend=RECEIVED + RECEIVED)]),
                ORIG, "more than one header")
    expect_fail(build_report(ORIG, parts=[text_part(), rfc822_part(ORIG, prepend=b"garbage")]),
                ORIG, "line boundary")


@case("boundary string inside the original is detected")
def _():
    evil = ORIG + f"--{BOUNDARY}\r\n".encode()
    expect_fail(build_report(evil), evil, "exactly 2 parts")


@case("command line: OK + JSON on success, exit 1 + FAIL on failure")
def _():
    script = HERE / "parse_report.py"
    with tempfile.TemporaryDirectory() as td:
        rep, orig = Path(td, "report.eml"), Path(td, "orig.eml")
        orig.write_bytes(ORIG)
        rep.write_bytes(build_report(ORIG))
        p = subprocess.run([sys.executable, str(script), str(rep), str(orig)], capture_output=True)
        assert p.returncode == 0, p
        out = p.stdout.decode().splitlines()
        assert out[0] == "OK", out
        assert json.loads(out[1]) == DEFAULT_LINES, out
        rep.write_bytes(build_report(ORIG, omit=("X-MS-Journal-Report",)))
        p = subprocess.run([sys.executable, str(script), str(rep), str(orig)], capture_output=True)
        assert p.returncode == 1, p
        assert b"FAIL" in p.stderr and b"X-MS-Journal-Report" in p.stderr, p.stderr
        assert b"OK" not in p.stdout, p.stdout
        p = subprocess.run([sys.executable, str(script), str(rep)], capture_output=True)
        assert p.returncode == 1, p


def main() -> int:
    passed = failed = 0
    for name, fn in CASES:
        try:
            fn()
        except Exception:  # noqa: BLE001  (AssertionError or unexpected crash)
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
