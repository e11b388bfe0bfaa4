"""When a user's sessions and API tokens stop counting: credential changes and revocations.

A session or API token carries the user's credential stamp from when it began
(:func:`gateway.identity.users.credential_stamp`) and its start time. It counts only while:

- the user still exists and is not ``disabled``;
- the user's stamp is the same (a new password ends everything started with the old one);
- it began after the user's last revocation in this process (``gateway sessions revoke``, or a
  reload that removed, disabled or re-keyed the user: a user removed and added back does not
  get old sessions back).
"""

from __future__ import annotations

import hmac

from gateway.identity.users import User, UserDirectory


class Revocations:
    """Per username, the time before which its sessions and tokens are refused (this process;
    carried over reloads). Stores that can find a user's sessions also delete them."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def revoke(self, username: str, at: float) -> None:
        self._since[username] = max(at, self._since.get(username, at))

    def since(self, username: str) -> float:
        return self._since.get(username, float("-inf"))

    def forget_before(self, horizon: float) -> None:
        """Drop revocations older than anything that could still be alive."""
        for username in [name for name, at in self._since.items() if at < horizon]:
            del self._since[username]


def credentials_current(
    user: User | None, stamp: str, began_at: float, revocations: Revocations
) -> bool:
    """Whether a session or token of ``user`` (stamped ``stamp``, begun at ``began_at``) counts."""
    if user is None or user.disabled:
        return False
    # SECURITY: constant time, although the stamp reveals nothing usable.
    if not hmac.compare_digest(stamp.encode(), user.stamp.encode()):
        return False
    return began_at >= revocations.since(user.username)


def changed_credentials(old: UserDirectory, new: UserDirectory) -> list[str]:
    """Usernames whose sessions a reload from ``old`` to ``new`` ends: removed, newly
    disabled, or with another password hash. (A role change needs nothing: roles are read
    afresh on every request.)"""
    changed = []
    for user in old:
        now = new.get(user.username)
        if now is None or (now.disabled and not user.disabled) or now.stamp != user.stamp:
            changed.append(user.username)
    return changed
