"""Pure parts of the model client: the prompt contract and parsing at any chunk boundary."""

from __future__ import annotations

import json

import pytest

from tripkit.llm import LineParser, ModelOutputError, bundle_request, request_message
from tripkit.models import Preferences

SUMMARY = {
    "summary": {
        "index": 0,
        "title": "Slow Lisbon",
        "destination": "Lisbon",
        "text": "Tiles\nand tarts.",
    }
}
BUNDLE = {
    "bundle": {
        "index": 0,
        "title": "Slow Lisbon",
        "destination": "Lisbon",
        "nights": 3,
        "estimatedCost": 1200,
    }
}
TEXT = json.dumps(SUMMARY) + "\n" + json.dumps(BUNDLE)


def test_every_split_point_gives_the_same_lines() -> None:
    for cut in range(len(TEXT) + 1):
        parser = LineParser()
        lines = parser.feed(TEXT[:cut]) + parser.feed(TEXT[cut:]) + parser.close()
        assert lines == [SUMMARY, BUNDLE], cut


def test_one_character_at_a_time_yields_the_summary_before_the_bundle_ends() -> None:
    parser = LineParser()
    seen_at = None
    for i, ch in enumerate(TEXT):
        if parser.feed(ch) and seen_at is None:
            seen_at = i
    assert seen_at == len(json.dumps(SUMMARY))  # right at the newline
    assert parser.close() == [BUNDLE]


def test_garbage_lines_are_output_errors() -> None:
    with pytest.raises(ModelOutputError, match="not JSON"):
        LineParser().feed("Sure! Here is your trip:\n")
    with pytest.raises(ModelOutputError, match="not an object"):
        LineParser().feed("[1, 2]\n")


def test_request_is_a_fenced_json_block_at_the_end() -> None:
    prefs = Preferences(interests=["food"], trip_length_days=3, budget=900, bundle_count=4)
    message = request_message(bundle_request(prefs, 2, ["Lisbon", "Porto"]))
    block = json.loads(message.rsplit("```json\n", 1)[1].removesuffix("\n```"))
    assert block["preferences"]["tripLengthDays"] == 3
    assert (block["task"], block["index"], block["count"]) == ("bundle", 2, 4)
    assert block["avoid"] == ["Lisbon", "Porto"]  # the earlier bundles' destinations
