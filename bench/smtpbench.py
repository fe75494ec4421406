#!/usr/bin/env python3
"""Load generator and counting sink for `make bench` (Python 3 stdlib only).

sink:  python3 smtpbench.py sink --listen 127.0.0.1:PORT --status FILE
       Accepts every transaction, counts recipients by class (original,
       journal) and writes the counts and the time of the last transaction
       to FILE as JSON, atomically, a few times a second.
load:  python3 smtpbench.py load --smtp 127.0.0.1:PORT --messages N
       --sessions S --size B [--reuse]
       Sends N messages over S concurrent sessions, one recipient each.
"""
import argparse
import asyncio
import json
import os
import random
import sys
import time


def parse_hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


class Counts:
    def __init__(self):
        self.original = 0
        self.journal = 0
        self.transactions = 0
        self.last = None
        self.first = None


async def sink_session(reader, writer, counts, journal_prefix):
    writer.write(b"220 sink ESMTP\r\n")
    rcpts = []
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
            elif verb == b"MAIL":
                rcpts = []
                writer.write(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                addr = line.split(b"<", 1)[1].split(b">", 1)[0].decode("latin-1").lower()
                rcpts.append(addr)
                writer.write(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                while True:
                    data = await reader.readline()
                    if not data or data == b".\r\n":
                        break
                for addr in rcpts:
                    if addr.startswith(journal_prefix):
                        counts.journal += 1
                    else:
                        counts.original += 1
                counts.transactions += 1
                now = time.monotonic()
                counts.first = counts.first or now
                counts.last = now
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
    except (ConnectionError, IndexError):
        pass
    writer.close()


async def run_sink(args):
    counts = Counts()
    host, port = parse_hostport(args.listen)
    server = await asyncio.start_server(
        lambda r, w: sink_session(r, w, counts, args.journal_prefix), host, port, backlog=1024
    )
    async with server:
        while True:
            status = {
                "original": counts.original,
                "journal": counts.journal,
                "transactions": counts.transactions,
                "last_monotonic": counts.last,
            }
            tmp = args.status + ".tmp"
            with open(tmp, "w") as f:
                json.dump(status, f)
            os.replace(tmp, args.status)
            await asyncio.sleep(0.1)


async def expect(reader, code):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(f"expected {code!r}, got {line!r}")
            return


async def send_one(reader, writer, rcpt, body):
    writer.write(b"MAIL FROM:<loadgen@example.net>\r\n")
    writer.write(b"RCPT TO:<" + rcpt.encode() + b">\r\n")
    writer.write(b"DATA\r\n")
    await writer.drain()
    await expect(reader, b"250")
    await expect(reader, b"250")
    await expect(reader, b"354")
    writer.write(body + b".\r\n")
    await writer.drain()
    await expect(reader, b"250")


async def connect(host, port):
    reader, writer = await asyncio.open_connection(host, port)
    await expect(reader, b"220")
    writer.write(b"EHLO loadgen.example.net\r\n")
    await writer.drain()
    await expect(reader, b"250")
    return reader, writer


async def lane(queue, host, port, reuse, stats):
    conn = None
    while True:
        try:
            rcpt, body = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if conn is None:
            conn = await connect(host, port)
        await send_one(conn[0], conn[1], rcpt, body)
        stats["sent"] += 1
        if not reuse:
            conn[1].write(b"QUIT\r\n")
            await conn[1].drain()
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].write(b"QUIT\r\n")
        conn[1].close()


def make_body(i, size):
    head = (
        f"From: loadgen@example.net\r\nTo: user{i % 1000:04d}@example.com\r\n"
        f"Subject: bench message {i}\r\nMessage-ID: <bench-{i}@example.net>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, size // len(line))
    return head + body


async def run_load(args):
    host, port = parse_hostport(args.smtp)
    rng = random.Random(args.seed)
    plan = [(f"user{rng.randrange(1000):04d}@example.com", make_body(i, args.size))
            for i in range(args.messages)]
    queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    stats = {"sent": 0}
    t0 = time.monotonic()
    await asyncio.gather(*(lane(queue, host, port, args.reuse, stats) for _ in range(args.sessions)))
    t1 = time.monotonic()
    print(json.dumps({"sent": stats["sent"], "t0": t0, "inject_s": t1 - t0}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    sink = sub.add_parser("sink")
    sink.add_argument("--listen", required=True)
    sink.add_argument("--status", required=True)
    sink.add_argument("--journal-prefix", default="journal@")
    load = sub.add_parser("load")
    load.add_argument("--smtp", required=True)
    load.add_argument("--messages", type=int, default=5000)
    load.add_argument("--sessions", type=int, default=20)
    load.add_argument("--size", type=int, default=4096)
    load.add_argument("--seed", type=int, default=1)
    load.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(run_sink(args) if args.mode == "sink" else run_load(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
