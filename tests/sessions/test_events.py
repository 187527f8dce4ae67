"""Events: what the core's ApplicationMessage carries besides the message."""

from __future__ import annotations

from sessions.events import ApplicationMessage
from sessions.message import FixMessage

from test_connection import NOW, logged_on, wire


def test_the_core_hands_over_its_field_index_with_each_application_message() -> None:
    conn = logged_on()
    body = [(37, b"o1"), (11, b"c1"), (17, b"4;7"), (11, b"second")]
    (ev,) = conn.receive_data(wire(b"8", 2, body), NOW)
    assert isinstance(ev, ApplicationMessage)
    assert ev.fields is not None
    assert ev.field_map() is ev.fields  # read once by the core, not again
    assert ev.fields == ev.message.first_values()
    assert ev.fields[11] == b"c1"  # the first occurrence, as message.get() answers


def test_a_hand_built_event_reads_its_fields_from_the_message() -> None:
    msg = FixMessage([(35, b"8"), (11, b"c1"), (58, b"hello")])
    ev = ApplicationMessage(msg, 5)
    assert ev.fields is None
    assert ev.field_map() == {35: b"8", 11: b"c1", 58: b"hello"}
    # The index is a cache of the message, not part of the event's value.
    assert ev == ApplicationMessage(msg, 5, fields={35: b"8"})
    assert "fields" not in repr(ev)
