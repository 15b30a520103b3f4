from datetime import date

import pytest
from pydantic import ValidationError

from tripkit.models import Preferences


def prefs(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"interests": ["food"], "tripLengthDays": 4, "budget": 1500}
    base.update(kw)
    return base


def test_camel_case_wire_and_defaults() -> None:
    p = Preferences.model_validate(prefs(currency="usd"))
    assert p.currency == "USD" and p.days == 4 and p.bundle_count == 3
    assert "tripLengthDays" in p.model_dump(by_alias=True)


def test_dates_give_the_length() -> None:
    p = Preferences.model_validate(
        prefs(tripLengthDays=None, startDate="2027-05-01", endDate="2027-05-07")
    )
    assert p.days == 7 and p.start_date == date(2027, 5, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interests": []}, "at least 1"),
        ({"budget": 0}, "greater than 0"),
        ({"currency": "euro"}, "ISO 4217"),
        ({"travellers": 0}, "greater than or equal to 1"),
        ({"pace": "frantic"}, "relaxed"),
        ({"notes": "x" * 1001}, "at most 1000"),
        ({"tripLengthDays": None}, "tripLengthDays"),
        ({"tripLengthDays": 61}, "less than or equal to 60"),
        (
            {"tripLengthDays": None, "startDate": "2027-05-07", "endDate": "2027-05-01"},
            "on or after",
        ),
        ({"startDate": "2027-05-01"}, "both"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_preferences_say_what_to_fix(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Preferences.model_validate(prefs(**change))
    assert message in str(info.value)
