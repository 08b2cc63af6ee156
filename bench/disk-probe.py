#!/usr/bin/env python3
"""What the disk under a directory takes, by write path: the figures that
bound a node's durable write rate (docs/benchmarks.md, "The disk's write
paths").

    bench/disk-probe.py [--dir DIR] [--seconds S] [--rounds N]

Each probe writes fixed-size chunks, each followed by `fdatasync`, for S
seconds, and prints MiB/s and syncs/s:

- append, buffered: the page cache, each chunk extending the file (what
  the node WAL does today);
- append, O_DIRECT: the same bytes past the page cache (aligned buffers);
- overwrite, buffered: chunks over blocks already written and synced, so
  no sync has to commit new extents;
- WAL + partition log: the first writer (buffered or O_DIRECT) while a
  second thread writes the same bytes through the page cache to another
  file and syncs it every 128 MiB (a checkpoint), as a data group does.

Probes alternate for N rounds because a virtual disk drifts between
minutes; compare figures of one round. Files are removed at exit.
Linux only (O_DIRECT); needs no packages beyond Python 3.
"""

import argparse
import mmap
import os
import tempfile
import threading
import time

MIB = 1 << 20
CHECKPOINT_BYTES = 128 * MIB
OVERWRITE_FILE_BYTES = 1024 * MIB


def aligned_buffer(size):
    """A page-aligned buffer (O_DIRECT needs aligned memory)."""
    buf = mmap.mmap(-1, size)
    buf.write(b"x" * size)
    return buf


def timed_syncs(fd, chunk, seconds, after_write=None):
    """Writes `chunk` and fdatasyncs until `seconds` pass; returns
    (bytes, syncs, elapsed)."""
    count = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        os.write(fd, chunk)
        os.fdatasync(fd)
        count += 1
        if after_write:
            after_write(len(chunk))
    elapsed = time.monotonic() - start
    return count * len(chunk), count, elapsed


def probe_append(path, size, seconds, direct):
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o600)
    try:
        return timed_syncs(fd, aligned_buffer(size), seconds)
    finally:
        os.close(fd)
        os.unlink(path)


def probe_overwrite(path, size, seconds):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        fill = b"y" * (64 * MIB)
        for _ in range(OVERWRITE_FILE_BYTES // len(fill)):
            os.write(fd, fill)
        os.fdatasync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        # Stop before the end: past it the writes would extend the file.
        budget = [OVERWRITE_FILE_BYTES]

        def bounded(n):
            budget[0] -= n
            if budget[0] < n:
                os.lseek(fd, 0, os.SEEK_SET)
                budget[0] = OVERWRITE_FILE_BYTES

        return timed_syncs(fd, aligned_buffer(size), seconds, bounded)
    finally:
        os.close(fd)
        os.unlink(path)


def probe_with_partition(wal_path, part_path, size, seconds, direct):
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    wal = os.open(wal_path, flags, 0o600)
    part = os.open(part_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = aligned_buffer(size)
    due = threading.Event()
    stop = threading.Event()

    def checkpointer():
        while not stop.is_set():
            if due.wait(0.05):
                due.clear()
                os.fdatasync(part)

    thread = threading.Thread(target=checkpointer)
    thread.start()
    pending = [0]

    def also_partition(n):
        os.write(part, chunk)
        pending[0] += n
        if pending[0] >= CHECKPOINT_BYTES:
            pending[0] = 0
            due.set()

    try:
        return timed_syncs(wal, chunk, seconds, also_partition)
    finally:
        stop.set()
        thread.join()
        os.close(wal)
        os.close(part)
        os.unlink(wal_path)
        os.unlink(part_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="a directory on the disk to probe")
    parser.add_argument("--seconds", type=float, default=3.0, help="per probe (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="times every probe runs (default 2)")
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= 60 or not 1 <= args.rounds <= 20:
        parser.error("--seconds must be in 0.5..60 and --rounds in 1..20")
    work = tempfile.mkdtemp(prefix="sluice-disk-probe-", dir=args.dir)
    wal, part = os.path.join(work, "wal"), os.path.join(work, "part")
    probes = [
        ("append, buffered, 64 KiB", lambda: probe_append(wal, 64 << 10, args.seconds, False)),
        ("append, O_DIRECT, 64 KiB", lambda: probe_append(wal, 64 << 10, args.seconds, True)),
        ("overwrite, buffered, 64 KiB", lambda: probe_overwrite(wal, 64 << 10, args.seconds)),
        ("append, buffered, 1 MiB", lambda: probe_append(wal, MIB, args.seconds, False)),
        ("append, O_DIRECT, 1 MiB", lambda: probe_append(wal, MIB, args.seconds, True)),
        ("overwrite, buffered, 1 MiB", lambda: probe_overwrite(wal, MIB, args.seconds)),
        ("WAL buffered + partition log, 512 KiB", lambda: probe_with_partition(wal, part, 512 << 10, args.seconds, False)),
        ("WAL O_DIRECT + partition log, 512 KiB", lambda: probe_with_partition(wal, part, 512 << 10, args.seconds, True)),
    ]
    print(f"disk probe in {args.dir}, {args.seconds:g} s per probe, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    try:
        for r in range(1, args.rounds + 1):
            print(f"round {r}")
            for name, run in probes:
                written, syncs, elapsed = run()
                print(f"  {name:<40} {written / MIB / elapsed:7.0f} MiB/s {syncs / elapsed:7.0f} syncs/s", flush=True)
    finally:
        for leftover in (wal, part):
            if os.path.exists(leftover):
                os.unlink(leftover)
        os.rmdir(work)


if __name__ == "__main__":
    main()
