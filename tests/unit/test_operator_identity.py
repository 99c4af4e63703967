"""The operator names itself without the password database: the image runs as uid 65532,
which has no entry there, and kopf's default identity (getpass.getuser) failed at start-up in
a real container."""

from __future__ import annotations

import getpass
import pwd

import pytest

from docrelay.app import operator_identity


def test_identity_needs_no_password_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_entry(*_: object) -> None:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(KeyError):
        getpass.getuser()  # what kopf would have called
    first, second = operator_identity(), operator_identity()
    assert first and first == second
