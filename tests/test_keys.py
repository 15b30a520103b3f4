import pytest

from tripkit import keys
from tripkit.errors import InvalidSessionId


def test_new_ids_are_valid_unique_and_128_bits() -> None:
    ids = {keys.new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    for session_id in ids:
        assert keys.validate_session_id(session_id) == session_id
        assert len(bytes.fromhex(session_id)) * 8 >= 128


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "*",
        "tripkit:*",
        "../etc/passwd",
        "a/b",
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "g" * 32,
        "0" * 31 + "\n",
        "x" * 100_000,
        None,
        123,
        b"0" * 32,
    ],
)
def test_malformed_ids_never_become_keys(bad: object) -> None:
    with pytest.raises(InvalidSessionId) as info:
        keys.session_key("tripkit", bad)  # type: ignore[arg-type]
    assert len(str(info.value)) < 300  # a huge id is not echoed back whole


def test_key_names() -> None:
    sid = "0123456789abcdef0123456789abcdef"
    assert keys.session_key("tripkit", sid) == f"tripkit:session:{sid}"
    assert keys.run_key("p", sid) == f"p:run:{sid}"
    assert keys.pattern("p") == "p:*"
