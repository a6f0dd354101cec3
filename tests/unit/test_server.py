"""Listen-address parsing."""

import pytest

from exporter.server import ListenError, parse_address


@pytest.mark.parametrize(
    "address, parsed",
    [(":9661", ("", 9661)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9661", ("::1", 9661)),
     ("localhost:1", ("localhost", 1))],
)
def test_parse_address(address, parsed):
    assert parse_address(address) == parsed


@pytest.mark.parametrize("address", ["9661", "host:", "host:0", "host:65536", "host:port", "::1:9661"])
def test_bad_addresses(address):
    with pytest.raises(ListenError):
        parse_address(address)
