"""Child process for the SIGKILL tests of ``sessions/store.py``; test_store.py runs it.

Usage: ``python store_crash_child.py DIRECTORY stream|batch``

* ``stream``: records application messages one by one, forever, printing each seq once
  ``record_sent`` has returned (i.e. once it is committed). The parent kills it.
* ``batch``: commits batches of ``BATCH`` messages (each also advancing next_target_seq),
  printing ``committed <last seq> <next_target_seq>`` after each; then opens one more batch,
  records into it, prints ``open <last seq>`` and waits on stdin inside the open batch until
  the parent kills it.
"""

from __future__ import annotations

import sys

from sessions.store import SqliteStore

TARGET = "KalshiRT"
SENDER = "0b6c7a4e-crash-test"
COMMITTED_BATCHES = 5
BATCH = 20


def payload(seq: int) -> bytes:
    """The bytes stored for message ``seq`` (the test recomputes them to check the contents)."""
    return b"8=FIXT.1.1\x0135=D\x0134=%d\x0111=order-%d\x0138=%d\x01" % (seq, seq, seq * 7)


def sending_time(seq: int) -> float:
    """A fixed, increasing timestamp per message (recent enough never to be pruned)."""
    return 1_900_000_000.0 + seq * 0.001


def stream(store: SqliteStore) -> None:
    out = sys.stdout
    # Bounded so an orphaned child cannot run forever if its parent vanished.
    for _ in range(1_000_000):
        seq = store.next_sender_seq
        store.record_sent(seq, sending_time(seq), payload(seq), application=True)
        out.write(f"{seq}\n")
        out.flush()


def batch(store: SqliteStore) -> None:
    out = sys.stdout
    for _ in range(COMMITTED_BATCHES):
        with store.batch():
            for _ in range(BATCH):
                seq = store.next_sender_seq
                store.record_sent(seq, sending_time(seq), payload(seq), application=True)
                store.set_next_target_seq(store.next_target_seq + 1)
        out.write(f"committed {store.next_sender_seq - 1} {store.next_target_seq}\n")
        out.flush()
    with store.batch():
        for _ in range(BATCH):
            seq = store.next_sender_seq
            store.record_sent(seq, sending_time(seq), payload(seq), application=True)
            store.set_next_target_seq(store.next_target_seq + 1)
        out.write(f"open {store.next_sender_seq - 1}\n")
        out.flush()
        sys.stdin.readline()  # killed while waiting here, inside the uncommitted batch


def main() -> None:
    directory, mode = sys.argv[1], sys.argv[2]
    store = SqliteStore.open(directory, TARGET, SENDER, now=1_900_000_000.0)
    {"stream": stream, "batch": batch}[mode](store)
    store.close()


if __name__ == "__main__":
    main()
