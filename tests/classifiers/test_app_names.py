"""App identities as trackers send them (#15 §7): the pure normalisation, by table and by
property, and its use by the app index (a pattern and a reported name meet in it)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomocore.classifiers.matchers import normalize_app
from tests.support.patterns import make_classifier

NORMALISED = [
    # Windows executables, any case, with or without their path
    ("WINWORD.EXE", "winword"),
    ("winword.exe", "winword"),
    ("Code.Exe", "code"),
    ("sublime_text.exe", "sublime text"),
    ("x.exe.EXE", "x"),
    ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "chrome"),
    ("/usr/bin/firefox", "firefox"),
    # macOS process names and bundles
    ("Google Chrome Helper (Renderer)", "google chrome helper (renderer)"),
    ("Visual Studio Code.app", "visual studio code"),
    ("com.apple.Safari", "apple safari"),
    ("com.apple.dt.Xcode", "apple dt xcode"),
    # Linux WM_CLASS: hyphenated names and reverse-DNS application ids
    ("libreoffice-writer", "libreoffice writer"),
    ("Gnome-terminal", "gnome terminal"),
    ("org.gnome.Terminal", "gnome terminal"),
    ("org.gnome.font-viewer", "gnome font viewer"),
    ("firefox_firefox", "firefox firefox"),
    ("md.obsidian.Obsidian", "obsidian obsidian"),
    # Korean and localized: macOS sends decomposed Hangul; full-width Latin folds
    ("\u1112\u1161\u11ab\u1100\u1173\u11af", "한글"),
    ("ＫａｋａｏＴａｌｋ", "kakaotalk"),
    ("파일  탐색기", "파일 탐색기"),
    ("Datei-Explorer", "datei explorer"),
    # not reverse-DNS, not a path: left as names
    ("zoom.us", "zoom.us"),
    ("Node.js", "node.js"),
    ("PyCharm 2025.1", "pycharm 2025.1"),
    ("AC/DC Player", "ac/dc player"),
    ("  Code  -  Insiders ", "code insiders"),
    ("", ""),
]


@pytest.mark.parametrize(("reported", "canonical"), NORMALISED)
def test_normalize_app_table(reported: str, canonical: str) -> None:
    assert normalize_app(reported) == canonical


NAMEISH = st.text(alphabet=st.sampled_from(list("aZ.-_ /\\exEXpm0\u3000\u0301İ한\u1112\u1161ｋ")))


@settings(max_examples=1500)
@given(st.one_of(st.text(max_size=40), NAMEISH))
def test_normalising_twice_changes_nothing(app: str) -> None:
    once = normalize_app(app)
    assert normalize_app(once) == once


@settings(max_examples=500)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789가나다", min_size=1).map(str.strip))
def test_a_canonical_name_is_unchanged(word: str) -> None:
    words = " ".join(word.split())
    assert normalize_app(words) == words


@settings(max_examples=300)
@given(st.text(alphabet="abcXYZ019 .-_/가", max_size=30))  # upper("ß") is "SS": ASCII here
def test_case_and_exe_do_not_matter(app: str) -> None:
    assert normalize_app(app.upper() + ".EXE") == normalize_app(app.lower() + ".exe")


@pytest.mark.parametrize(
    "reported",
    ["GNOME-TERMINAL", "org.gnome.Terminal", "gnome_terminal.exe", "/usr/bin/gnome-terminal"],
)
def test_reported_forms_meet_the_pattern_as_written(reported: str) -> None:
    clf = make_classifier({"category": "Development", "appPatterns": ["GNOME Terminal"]})
    d = clf.classify(reported, "", "")
    assert (d.category, d.source, d.pattern) == ("Development", "app", "GNOME Terminal")


def test_a_pattern_written_as_an_id_matches_the_display_forms() -> None:
    clf = make_classifier({"category": "File Management", "appPatterns": ["org.kde.dolphin"]})
    assert clf.classify("kde-dolphin", "", "").category == "File Management"
    assert clf.classify("org.kde.dolphin", "", "").category == "File Management"
    assert clf.classify("dolphin", "", "").category == "Uncategorized"
