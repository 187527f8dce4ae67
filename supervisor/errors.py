"""The supervisor's exceptions.

All of them derive from :class:`sessions.errors.KalshiFixError`, so one ``except KalshiFixError``
still catches everything the program raises. Like the session layer's errors they name API key
ids, never key material, and say what the operator can do.
"""

from __future__ import annotations

from sessions.errors import KalshiFixError


class SupervisorError(KalshiFixError):
    """Base class of the supervisor's errors."""


class RestartIntensityExceeded(SupervisorError):
    """More restarts happened within the restart period than the configured intensity allows.

    The supervisor gives up (it fails loudly instead of restarting in a loop).
    """

    def __init__(self, child: str, count: int, period: float, max_restarts: int) -> None:
        self.child = child
        self.count = count
        self.period = period
        self.max_restarts = max_restarts
        super().__init__(
            f"session {child!r} needed {count} restarts within {period:g} s, more than the "
            f"allowed {max_restarts} (restart_intensity) per {period:g} s (restart_period); "
            "the supervisor is giving up instead of restarting in a loop. Fix the cause shown "
            "by the earlier errors, then start the supervisor again"
        )


class KeyInUse(SupervisorError):
    """Inside this process, another holder already has a connection on this API key."""

    def __init__(self, key_id: str, owner: str, requested_by: str | None = None) -> None:
        self.key_id = key_id
        self.owner = owner
        self.requested_by = requested_by
        who = f" ({requested_by!r} asked for it)" if requested_by else ""
        super().__init__(
            f"API key {key_id} is in use by {owner!r}{who}; Kalshi allows one connection per "
            "API key, so the second connection must wait until the first is fully closed"
        )


class KeyLockedByOtherProcess(SupervisorError):
    """Another process on this host holds the OS-level lock for an API key."""

    def __init__(
        self,
        key_id: str,
        pid: int | None,
        lock_path: str,
        holder_description: str | None = None,
    ) -> None:
        self.key_id = key_id
        self.pid = pid
        self.lock_path = lock_path
        self.holder_description = holder_description
        if pid is None:
            holder = "another process (its PID is not yet written; it may be starting up)"
        else:
            holder = f"process {pid}"
            if holder_description:
                holder += f" ({holder_description})"
        super().__init__(
            f"API key {key_id} is locked by {holder} (lock file {lock_path}); Kalshi allows one "
            "connection per API key, so only one process on this host may use it. Stop that "
            "process, or give this configuration a different key"
        )


class ChildStopped(SupervisorError):
    """A supervised session ended with an error that retrying cannot fix; it is not restarted.

    ``explanation`` is the :class:`~supervisor.classify.RestartDecision`'s explanation, naming
    the likely cause and the fix.
    """

    def __init__(self, child: str, explanation: str) -> None:
        self.child = child
        self.explanation = explanation
        super().__init__(f"session {child!r} stopped and will not be restarted: {explanation}")
