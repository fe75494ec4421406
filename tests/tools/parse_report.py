#!/usr/bin/env python3
"""Independent checker for an Exchange-style envelope journal report.

Usage:  python3 tests/tools/parse_report.py REPORT.eml ORIGINAL.eml

REPORT.eml is the journal report exactly as delivered (CRLF line endings),
ORIGINAL.eml the message that was submitted to the gateway.  The checker
requires:

  1. top level: an ``X-MS-Journal-Report`` header (empty value allowed),
     ``Message-ID``, ``From``, ``Subject``, ``MIME-Version: 1.0`` and
     ``Content-Type: multipart/mixed`` with exactly two body parts;
  2. part 1: ``text/plain; charset=utf-8`` with Content-Transfer-Encoding
     7bit (or absent) or quoted-printable; its decoded first line starts
     with ``Sender: `` and some line starts with ``Message-Id: `` and some
     line with ``Subject: ``;
  3. part 2: ``message/rfc822`` (CTE absent, 7bit, 8bit or binary); its body
     bytes, taken *verbatim from the report file* (not re-serialised by the
     email package), must end with the exact bytes of ORIGINAL.eml.  The
     only bytes allowed in front of the original are one ``Received:`` trace
     header field (possibly folded) that the gateway may have prepended.

The raw part-2 body is located by scanning the report bytes for the
multipart delimiter lines: the body is what follows the part's empty
header/body separator line, up to but excluding the CRLF that precedes the
next ``--boundary`` line (that CRLF belongs to the delimiter, RFC 2046
section 5.1.1).

On success prints ``OK`` and, on the next line, the decoded text-part lines
as a JSON array (ASCII-escaped), exit status 0.  On failure prints
``FAIL: <reason>`` to stderr, exit status 1.

Python 3.11 standard library only.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import json
import re
import sys
from dataclasses import dataclass, field
from email.parser import BytesParser

CRLF = b"\r\n"


class ReportError(Exception):
    """The report does not satisfy the journal-report contract."""


@dataclass
class RawPart:
    start: int  # offset of the first byte of the part (after delimiter CRLF)
    end: int  # offset one past the last byte (before the delimiter's CRLF)
    data: bytes


@dataclass
class Result:
    lines: list[str]
    prefix: bytes  # bytes in front of the original inside part 2 ('' or a Received field)
    part2_body: bytes = field(repr=False, default=b"")


# ---------------------------------------------------------------------------
# raw byte scanning


def header_body_split(data: bytes, what: str) -> tuple[bytes, bytes, int]:
    """Split at the first empty line.  Returns (header incl. last CRLF, body,
    body offset).  A leading CRLF means an empty header section."""
    if data.startswith(CRLF):
        return b"", data[2:], 2
    idx = data.find(b"\r\n\r\n")
    if idx < 0:
        if b"\n\n" in data:
            raise ReportError(f"{what}: header/body separator uses bare LF, expected CRLF")
        raise ReportError(f"{what}: no empty line (CRLF CRLF) separating header and body")
    return data[: idx + 2], data[idx + 4 :], idx + 4


def find_raw_parts(report: bytes, body_offset: int, boundary: bytes) -> tuple[list[RawPart], bool]:
    """Scan the top-level body for delimiter lines.

    Returns the list of body parts and whether a close delimiter was found.
    A delimiter line is ``--boundary`` (close: ``--boundary--``) at the
    start of a line, optionally followed by linear whitespace (transport
    padding).  The CRLF preceding a delimiter line belongs to the delimiter.
    """
    dash = b"--" + boundary
    delims: list[tuple[int, int, bool]] = []  # (line start, next line start, is_close)
    pos = body_offset
    n = len(report)
    while pos < n:
        eol = report.find(CRLF, pos)
        line_end = n if eol < 0 else eol
        nxt = n if eol < 0 else eol + 2
        line = report[pos:line_end]
        if line.startswith(dash):
            rest = line[len(dash) :]
            if rest.startswith(b"--") and rest[2:].strip(b" \t") == b"":
                delims.append((pos, nxt, True))
                break
            if rest.strip(b" \t") == b"":
                delims.append((pos, nxt, False))
        pos = nxt
    closed = bool(delims) and delims[-1][2]
    parts = []
    for (s0, after0, close0), (s1, _after1, _close1) in zip(delims, delims[1:]):
        if close0:
            break
        # the part ends before the CRLF that precedes the next delimiter line
        end = max(after0, s1 - 2)
        parts.append(RawPart(after0, end, report[after0:end]))
    return parts, closed


def check_received_prefix(prefix: bytes) -> None:
    if prefix == b"":
        return
    if not prefix.endswith(CRLF):
        raise ReportError(
            "part 2 body does not end with ORIGINAL.eml at a line boundary; "
            f"bytes before the original end with {prefix[-40:]!r}"
        )
    lines = prefix[:-2].split(CRLF)
    first, rest = lines[0], lines[1:]
    if not re.match(rb"(?i)^received[ \t]*:", first):
        raise ReportError(
            "unexpected bytes in front of the original message inside part 2 "
            f"(only one Received: header may be prepended): {prefix[:200]!r}"
        )
    for extra in rest:
        if extra[:1] not in (b" ", b"\t"):
            raise ReportError(
                "more than one header field prepended to the original message "
                f"(only one Received: header is allowed): {extra[:120]!r}"
            )


def describe_mismatch(body: bytes, original: bytes) -> str:
    """Explain where part 2 stops matching the original (compared from the end)."""
    i = 0
    lim = min(len(body), len(original))
    while i < lim and body[-1 - i] == original[-1 - i]:
        i += 1
    off = len(original) - i - 1  # offset in ORIGINAL of the last differing byte
    hint = ""
    if b"\r\n.." in body and body.replace(b"\r\n..", b"\r\n.").endswith(original):
        hint = " (looks like SMTP dot-stuffing was not undone)"
    elif body.replace(CRLF, b"\n").endswith(original.replace(CRLF, b"\n")):
        hint = " (line endings differ)"
    if i == lim and len(body) < len(original):
        return (
            f"part 2 body ({len(body)} bytes) is shorter than ORIGINAL.eml "
            f"({len(original)} bytes) and is a suffix of it{hint}"
        )
    return (
        f"part 2 body does not end with ORIGINAL.eml: the last {i} bytes match, "
        f"difference at ORIGINAL.eml offset {off}: original has "
        f"{original[max(0, off - 20):off + 21]!r}, report has "
        f"{body[max(0, len(body) - i - 21):len(body) - i + 20]!r}{hint}"
    )


# ---------------------------------------------------------------------------
# checks


def strip_comments(value: str) -> str:
    prev = None
    while prev != value:
        prev = value
        value = re.sub(r"\([^()]*\)", " ", value)
    return value.strip()


def header_value(msg, name: str) -> str | None:
    v = msg.get(name)
    return None if v is None else str(v)


def decode_text_part(part) -> list[str]:
    ctype = part.get_content_type()
    if ctype != "text/plain":
        raise ReportError(f"part 1 must be text/plain, got {ctype}")
    charset = part.get_param("charset")
    if charset is None or str(charset).strip().lower() not in ("utf-8", "utf8"):
        raise ReportError(f"part 1 must declare charset=utf-8, got {charset!r}")
    cte = (header_value(part, "Content-Transfer-Encoding") or "7bit").strip().lower()
    if cte not in ("7bit", "quoted-printable"):
        raise ReportError(f"part 1 Content-Transfer-Encoding must be 7bit or quoted-printable, got {cte!r}")
    raw = part.get_payload(decode=False)
    if not isinstance(raw, str):
        raise ReportError("part 1 has an unexpected (multipart) payload")
    if cte == "7bit":
        data = part.get_payload(decode=True)
        if any(b >= 0x80 for b in data):
            raise ReportError("part 1 is declared 7bit but contains 8-bit bytes")
    else:
        data = part.get_payload(decode=True)
        for d in part.defects:
            raise ReportError(f"part 1 quoted-printable decoding defect: {type(d).__name__}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReportError(f"part 1 is not valid UTF-8 after decoding: {e}") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ReportError("part 1 is empty")
    if not lines[0].startswith("Sender: "):
        raise ReportError(f"part 1 first line must start with 'Sender: ', got {lines[0]!r}")
    for prefix in ("Message-Id: ", "Subject: "):
        if not any(l.startswith(prefix) for l in lines):
            raise ReportError(f"part 1 has no line starting with {prefix!r}; lines: {lines!r}")
    return lines


def check_report(report: bytes, original: bytes) -> Result:
    if not original:
        raise ReportError("ORIGINAL.eml is empty")
    msg = BytesParser(policy=email.policy.compat32).parsebytes(report)

    # 1. top-level headers
    if "X-MS-Journal-Report" not in msg:
        raise ReportError("missing header X-MS-Journal-Report")
    for name in ("Message-ID", "From", "Subject"):
        if name not in msg:
            raise ReportError(f"missing header {name}")
    if not (header_value(msg, "Message-ID") or "").strip():
        raise ReportError("empty Message-ID header")
    if not (header_value(msg, "From") or "").strip():
        raise ReportError("empty From header")
    mv = header_value(msg, "MIME-Version")
    if mv is None:
        raise ReportError("missing header MIME-Version")
    if strip_comments(mv) != "1.0":
        raise ReportError(f"MIME-Version must be 1.0, got {mv!r}")
    if "Content-Type" not in msg:
        raise ReportError("missing header Content-Type")
    if msg.get_content_type() != "multipart/mixed":
        raise ReportError(f"Content-Type must be multipart/mixed, got {msg.get_content_type()}")
    bnd = msg.get_boundary()
    if not bnd:
        raise ReportError("multipart/mixed without a boundary parameter")
    for d in msg.defects:
        if isinstance(d, (email.errors.StartBoundaryNotFoundDefect,
                          email.errors.CloseBoundaryNotFoundDefect,
                          email.errors.MissingHeaderBodySeparatorDefect,
                          email.errors.MultipartInvariantViolationDefect,
                          email.errors.NoBoundaryInMultipartDefect,
                          email.errors.FirstHeaderLineIsContinuationDefect)):
            raise ReportError(f"malformed report structure: {type(d).__name__}")
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        count = len(parts) if isinstance(parts, list) else 0
        raise ReportError(f"multipart/mixed must have exactly 2 parts, found {count}")

    # raw scan (independent of the email package's view)
    try:
        boundary = bnd.encode("ascii")
    except UnicodeEncodeError:
        raise ReportError(f"boundary is not ASCII: {bnd!r}") from None
    _hdr, _body, body_off = header_body_split(report, "report")
    raw_parts, closed = find_raw_parts(report, body_off, boundary)
    if not closed:
        raise ReportError(f"no close delimiter line '--{bnd}--' found (scanning CRLF-terminated lines)")
    if len(raw_parts) != 2:
        raise ReportError(f"raw scan found {len(raw_parts)} body parts, expected exactly 2")

    # 2. text part
    lines = decode_text_part(parts[0])

    # 3. message/rfc822 part
    p2 = parts[1]
    if p2.get_content_type() != "message/rfc822":
        raise ReportError(f"part 2 must be message/rfc822, got {p2.get_content_type()}")
    cte2 = (header_value(p2, "Content-Transfer-Encoding") or "7bit").strip().lower()
    if cte2 not in ("7bit", "8bit", "binary"):
        raise ReportError(f"part 2 (message/rfc822) must not be encoded, got Content-Transfer-Encoding {cte2!r}")
    p2_hdr, p2_body, _ = header_body_split(raw_parts[1].data, "part 2")
    if not re.search(rb"(?im)^content-type[ \t]*:[ \t]*message/rfc822", p2_hdr):
        raise ReportError("raw scan: second part's header does not declare message/rfc822")
    if not p2_body.endswith(original):
        raise ReportError(describe_mismatch(p2_body, original))
    prefix = p2_body[: len(p2_body) - len(original)]
    check_received_prefix(prefix)
    return Result(lines=lines, prefix=prefix, part2_body=p2_body)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: parse_report.py REPORT.eml ORIGINAL.eml", file=sys.stderr)
        return 1
    try:
        with open(argv[1], "rb") as f:
            report = f.read()
        with open(argv[2], "rb") as f:
            original = f.read()
    except OSError as e:
        print(f"FAIL: cannot read input: {e}", file=sys.stderr)
        return 1
    try:
        result = check_report(report, original)
    except ReportError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("OK")
    print(json.dumps(result.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
