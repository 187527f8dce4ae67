"""The session settings and the acceptor's LogonRefusal: what they accept and what they show."""

from __future__ import annotations

import attrs
import pytest

from sessions.settings import LogonRefusal, Role, SessionSettings


def test_logon_refusal_is_frozen_and_compares_by_value() -> None:
    refusal = LogonRefusal("Invalid signature", 5, 96)
    assert refusal == LogonRefusal("Invalid signature", session_reject_reason=5, ref_tag=96)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        refusal.text = "other"  # type: ignore[misc]


def test_logon_refusal_needs_a_text() -> None:
    # The text is the Logout's only word to the peer about why.
    with pytest.raises(ValueError):
        LogonRefusal("")


def test_logon_refusal_ref_tag_needs_a_reason() -> None:
    # RefTagID travels in the Reject, which is sent only with a SessionRejectReason.
    with pytest.raises(ValueError, match="session_reject_reason"):
        LogonRefusal("Invalid signature", ref_tag=96)
    assert LogonRefusal("Invalid signature", 5).ref_tag is None


def test_settings_leave_the_reset_logon_review_unset_by_default() -> None:
    settings = SessionSettings(role=Role.ACCEPTOR, sender_comp_id="KalshiNR")
    assert settings.review_reset_logon is None
    assert "review_reset_logon" not in repr(
        attrs.evolve(settings, review_reset_logon=lambda logon: None)
    )
