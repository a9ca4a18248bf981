"""Rules are data: operator extensions, validation, atomic reload and SIGHUP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet import reactor

from anygle.moderation import CLEAN, Classifier, load_rules
from anygle.moderation.patterns import split_alternation, squeeze_regex
from anygle.moderation.rulefiles import DATA_DIR
from anygle.tap import AnygleService
from tests.conftest import settings

FLAGS = {"protect_personal_info": False, "moderated": True}


@pytest.mark.slow
def test_packaged_rules_load_and_are_gated() -> None:
    rules = load_rules()
    assert rules.words and rules.rules
    # Every packaged rule has key words: an ungated rule costs time on every message.
    assert not rules.always, [r.id for r in rules.always]
    assert all(p.suffix in (".txt", ".json") for p in DATA_DIR.iterdir() if p.is_file())


@pytest.mark.slow
def test_operator_directory_extends_word_lists_and_rules(tmp_path: Path) -> None:
    (tmp_path / "profanity.txt").write_text("# local additions\nfrack*\n", encoding="utf-8")
    (tmp_path / "local.json").write_text(
        json.dumps(
            {
                "macros": {"pet": "(?:hamster|gerbil)"},
                "rules": [
                    {
                        "id": "local.pet",
                        "category": "violent_threat",
                        "re": "eat %your% %pet%",
                        "keys": ["hamster", "gerbil"],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    clf = Classifier(str(tmp_path))
    assert clf.classify("oh frackin hell", **FLAGS).category == "profanity"
    assert clf.classify("i will eat your hamster", **FLAGS).category == "violent_threat"
    assert clf.classify("fuck", **FLAGS).category == "profanity"  # packaged rules still there


@pytest.mark.slow
def test_single_operator_file(tmp_path: Path) -> None:
    path = tmp_path / "slur.txt"
    path.write_text("zorblax\n", encoding="utf-8")
    assert Classifier(str(path)).classify("you zorblax", **FLAGS).category == "slur"


@pytest.mark.slow
def test_allow_list_silences_a_word(tmp_path: Path) -> None:
    (tmp_path / "allow.txt").write_text("piss\n", encoding="utf-8")
    assert Classifier(str(tmp_path)).classify("piss", **FLAGS) == CLEAN


@pytest.mark.slow
def test_reload_picks_up_changes_and_keeps_old_rules_on_error(tmp_path: Path) -> None:
    words = tmp_path / "insult.txt"
    words.write_text("blorp\n", encoding="utf-8")
    clf = Classifier(str(tmp_path))
    assert clf.classify("blorp", **FLAGS).category == "insult"

    words.write_text("blorp\nsnerk\n", encoding="utf-8")
    clf.reload()
    assert clf.classify("snerk", **FLAGS).category == "insult"

    (tmp_path / "broken.json").write_text(
        '{"rules": [{"id": "x", "category": "insult", "re": "("}]}'
    )
    before = clf.rules
    with pytest.raises(ValueError, match=r"broken\.json.*rule #0 \(x\).*bad regex"):
        clf.reload()
    assert clf.rules is before
    assert clf.classify("snerk", **FLAGS).category == "insult"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "cannot read rules"),
        ("bad.json", '{"rules": [{"id": "x", "category": "nope", "re": "a"}]}', "unknown category"),
        ("bad.json", '{"rules": [{"id": "x", "category": "insult"}]}', "exactly one of"),
        (
            "bad.json",
            '{"rules": [{"id": "x", "category": "insult", "re": "%nomacro%"}]}',
            "unknown macro",
        ),
        ("bad.json", '{"rules": [{"id": "x", "category": "grooming", "re": "a"}]}', "signal"),
        (
            "bad.json",
            '{"rules": [{"id": "x", "category": "insult", "re": "a", "wat": 1}]}',
            "unknown fields",
        ),
        ("bad.json", '{"settings": {"grooming_threshold": 0}}', "invalid setting"),
        ("nonsense.txt", "word\n", "named after a category"),
        ("insult.txt", "ok\nbad$word\n", r"insult\.txt:2"),
    ],
)
def test_broken_files_raise_clear_errors(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_rules(str(tmp_path))


def test_missing_operator_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        Classifier(str(tmp_path / "missing"))


@pytest.mark.slow
def test_reload_swaps_rules_and_keeps_them_when_a_file_is_broken(tmp_path: Path) -> None:
    """What SIGHUP and the console's reload_moderation() run (SIGHUP itself: test_screening)."""
    words = tmp_path / "insult.txt"
    words.write_text("blorp\n", encoding="utf-8")
    service = AnygleService(settings(moderation_rules=str(tmp_path)), reactor)
    clf = service.classifier
    assert clf.classify("blorp", **FLAGS).category == "insult"
    words.write_text("snerk\n", encoding="utf-8")
    assert service.reload_moderation().startswith("reloaded ")
    assert clf.classify("snerk", **FLAGS).category == "insult"
    assert clf.classify("blorp", **FLAGS) == CLEAN
    words.write_text("bad$\n", encoding="utf-8")
    assert service.reload_moderation().startswith("not reloaded: ")
    assert clf.classify("snerk", **FLAGS).category == "insult"  # old rules kept


def test_regex_helpers() -> None:
    assert squeeze_regex(r"kill\bb+ee") == r"kil\bb+e"
    assert split_alternation("(?:a|b(?:c|d)|[|]|e)") == ["a", "b(?:c|d)", "[|]", "e"]
    assert split_alternation("(?:a)(?:b|c)") == ["(?:a)(?:b|c)"]
