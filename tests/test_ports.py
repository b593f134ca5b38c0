"""The tests' port picker (tests/_ports.py): outside the range outgoing connections draw from, and free."""

import socket

from tests._ports import _ephemeral, free_port


def test_free_port_is_bindable_and_outside_the_ephemeral_range():
    low, high = _ephemeral()
    ports = {free_port() for _ in range(20)}
    assert not any(low <= p <= high for p in ports)
    assert len(ports) > 1  # drawn at random: two test workers rarely draw the same one
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_a_bound_port_is_never_offered(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        monkeypatch.setattr("tests._ports._LOW", port)
        monkeypatch.setattr("tests._ports._HIGH", port + 199)
        assert port not in {free_port() for _ in range(5)}
    finally:
        taken.close()
