"""The shipped pattern set: the labelled dev sample scores 100%, and popular apps and sites
beyond the sample land where CONTRACT §5 says."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pomocore.classifiers.check import check_pattern_set
from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.patterns import load_default_pattern_set
from pomocore.classify_cli import classify_command
from pomocore.core.decision import Decision

# The labelled dev sample of the contract, copied into the repository (tests/data/).
DEV_SET = Path(__file__).resolve().parents[1] / "data" / "labeled_events.dev.jsonl"


def test_dev_set_scores_100_percent_through_classify_command() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert classify_command(str(DEV_SET), True, out, err=err) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 68
    wrong = [r for r in rows if r["category"] != r["expected"]]
    assert wrong == []
    assert "68/68 match" in err.getvalue()


def test_default_set_has_no_check_errors() -> None:
    assert [f for f in check_pattern_set(load_default_pattern_set()) if f.level == "error"] == []


def test_default_set_is_large_and_covers_every_category_but_uncategorized() -> None:
    ps = load_default_pattern_set()
    sizes = {e.category: len(e.app_patterns) + len(e.domain_patterns) for e in ps.entries}
    assert sum(sizes.values()) > 1000
    assert [c for c, n in sizes.items() if n == 0] == ["Uncategorized"]


BROADER = [
    # desktop apps as macOS and Windows report them
    ("Visual Studio Code", "", "", "Development"),
    ("Code.exe", "", "", "Development"),
    ("WindowsTerminal.exe", "", "", "Development"),
    ("PyCharm 2025.1", "", "", "Development"),
    ("DataGrip", "", "", "Development"),
    ("Cursor", "", "", "Development"),
    ("Claude", "", "", "LLM"),
    ("WINWORD.EXE", "", "", "Documentation"),
    ("Microsoft OneNote", "", "", "Documentation"),
    ("Adobe Illustrator 2026", "", "", "Design"),
    ("Adobe After Effects 2026", "", "", "Video Editing"),
    ("DaVinci Resolve", "", "", "Video Editing"),
    ("EXCEL.EXE", "", "", "Productivity"),
    ("Keynote", "", "", "Productivity"),
    ("Linear", "", "", "Productivity"),
    ("영웅문4", "", "", "Finance"),
    ("File Explorer", "", "", "File Management"),
    ("explorer.exe", "", "", "File Management"),
    ("Raycast", "", "", "System & Utilities"),
    ("Task Manager", "", "", "System & Utilities"),
    ("Webex", "", "", "Meetings"),
    ("Microsoft Outlook", "", "", "Communication"),
    ("Discord", "", "voice channel", "Communication"),
    ("LINE", "", "", "SNS"),
    ("Telegram", "", "", "SNS"),
    ("Messages", "", "", "SNS"),
    ("Netflix", "", "", "Entertainment"),
    ("IINA", "", "movie.mkv", "Entertainment"),
    ("IINA", "", "Lecture 3 - Linear Algebra.mp4", "Education"),
    ("Epic Games Launcher", "", "", "Game"),
    ("VALORANT", "", "", "Game"),
    ("메이플스토리", "", "", "Game"),
    ("Melon", "", "", "Music"),
    ("Apple Music", "", "", "Music"),
    ("쿠팡", "", "", "E-commerce & Shopping"),
    ("LockApp", "", "", "AFK"),
    # sites, Korean services included
    ("Google Chrome", "https://gitlab.com/a/b/-/merge_requests/1", "", "Development"),
    ("Google Chrome", "https://docs.python.org/3/library/", "", "Development"),
    ("Google Chrome", "https://console.aws.amazon.com/ec2", "", "Development"),
    ("Google Chrome", "https://www.amazon.com/dp/B0", "", "E-commerce & Shopping"),
    ("Google Chrome", "https://music.amazon.com/", "", "Music"),
    ("Google Chrome", "https://www.primevideo.com/", "", "Entertainment"),
    ("Google Chrome", "https://chatgpt.com/c/1", "", "LLM"),
    ("Google Chrome", "https://gemini.google.com/app", "", "LLM"),
    ("Google Chrome", "https://docs.google.com/spreadsheets/d/1", "", "Productivity"),
    ("Google Chrome", "https://docs.google.com/presentation/d/1", "", "Productivity"),
    ("Google Chrome", "https://calendar.google.com/", "", "Productivity"),
    ("Google Chrome", "https://linear.app/acme/issue/ENG-1", "", "Productivity"),
    ("Google Chrome", "https://acme.atlassian.net/wiki/spaces/ENG", "", "Documentation"),
    ("Google Chrome", "https://www.figma.com/file/abc", "", "Design"),
    ("Google Chrome", "https://www.udemy.com/course/x", "", "Education"),
    ("Google Chrome", "https://arxiv.org/abs/1706.03762", "", "Education"),
    ("Google Chrome", "https://cs.stanford.edu/", "", "Education"),
    ("Google Chrome", "https://www.binance.com/en/trade", "", "Finance"),
    ("Google Chrome", "https://finance.naver.com/item/main.naver", "", "Finance"),
    ("Google Chrome", "https://www.dropbox.com/home", "", "File Management"),
    ("Google Chrome", "https://search.naver.com/search.naver?query=x", "", "Browsing"),
    ("Google Chrome", "https://www.bing.com/search?q=x", "", "Browsing"),
    ("Google Chrome", "about:blank", "", "Browsing"),
    ("Microsoft Edge", "edge://newtab/", "", "Browsing"),
    ("Google Chrome", "https://ads.google.com/aw/overview", "", "Marketing"),
    ("Google Chrome", "https://searchad.naver.com/", "", "Marketing"),
    ("Google Chrome", "https://vault.bitwarden.com/", "", "System & Utilities"),
    ("Google Chrome", "https://zoom.us/j/123", "", "Meetings"),
    ("Google Chrome", "https://app.slack.com/client/T1", "", "Communication"),
    ("Google Chrome", "https://mail.naver.com/", "", "Communication"),
    ("Google Chrome", "https://teams.microsoft.com/v2/", "Meeting in General", "Meetings"),
    ("Google Chrome", "https://blog.naver.com/someone/1", "", "SNS"),
    ("Google Chrome", "https://www.reddit.com/r/python", "", "SNS"),
    ("Google Chrome", "https://www.linkedin.com/feed/", "", "SNS"),
    ("Google Chrome", "https://www.linkedin.com/learning/python", "", "Education"),
    ("Google Chrome", "https://comic.naver.com/webtoon/list", "", "Entertainment"),
    ("Google Chrome", "https://chzzk.naver.com/live/1", "", "Entertainment"),
    ("Google Chrome", "https://www.tving.com/", "", "Entertainment"),
    ("Google Chrome", "https://store.steampowered.com/app/1", "", "Game"),
    ("Google Chrome", "https://www.op.gg/summoners/kr/x", "", "Game"),
    ("Google Chrome", "https://open.spotify.com/playlist/1", "", "Music"),
    ("Google Chrome", "https://www.melon.com/chart/", "", "Music"),
    ("Google Chrome", "https://vibe.naver.com/today", "", "Music"),
    ("Google Chrome", "https://smartstore.naver.com/shop/products/1", "", "E-commerce & Shopping"),
    ("Google Chrome", "https://www.musinsa.com/app/", "", "E-commerce & Shopping"),
    ("Google Chrome", "https://www.11st.co.kr/", "", "E-commerce & Shopping"),
]


@pytest.mark.parametrize(
    "app", ["Whale", "NAVER Whale", "Microsoft Edge", "msedge.exe", "Firefox", "Brave Browser"]
)
def test_browsers(default_classifier: Classifier, app: str) -> None:
    assert default_classifier.is_browser(app)
    assert default_classifier.classify(app, "", "") == Decision("Browsing", "default", "")


@pytest.mark.parametrize(("app", "url", "title", "expected"), BROADER)
def test_popular_apps_and_sites(
    default_classifier: Classifier, app: str, url: str, title: str, expected: str
) -> None:
    d = default_classifier.classify(app, url, title)
    assert d.category == expected, d
    assert d.source != "default"


# App identities as trackers report them (#15 §7): Windows executables, macOS process names and
# bundle ids, Linux WM_CLASS values and application ids, localized and Korean names (macOS
# sends Hangul decomposed). Each must be decided by a pattern, not left to the LLM.
TRACKER_APPS = [
    ("WINWORD.EXE", "Documentation"),
    ("winword.exe", "Documentation"),
    ("EXCEL.EXE", "Productivity"),
    ("POWERPNT.EXE", "Productivity"),
    ("OUTLOOK.EXE", "Communication"),
    ("ONENOTE.EXE", "Documentation"),
    ("chrome.exe", "Browsing"),
    ("firefox.exe", "Browsing"),
    ("msedge.exe", "Browsing"),
    ("brave.exe", "Browsing"),
    ("whale.exe", "Browsing"),
    ("opera.exe", "Browsing"),
    ("Code.exe", "Development"),
    ("devenv.exe", "Development"),
    ("idea64.exe", "Development"),
    ("pycharm64.exe", "Development"),
    ("webstorm64.exe", "Development"),
    ("rider64.exe", "Development"),
    ("datagrip64.exe", "Development"),
    ("clion64.exe", "Development"),
    ("goland64.exe", "Development"),
    ("WindowsTerminal.exe", "Development"),
    ("powershell.exe", "Development"),
    ("pwsh.exe", "Development"),
    ("cmd.exe", "Development"),
    ("sublime_text.exe", "Development"),
    ("notepad++.exe", "Development"),
    ("Postman.exe", "Development"),
    ("GitHubDesktop.exe", "Development"),
    ("Cursor.exe", "Development"),
    ("Obsidian.exe", "Documentation"),
    ("Notion.exe", "Documentation"),
    ("Figma.exe", "Design"),
    ("Photoshop.exe", "Design"),
    ("Illustrator.exe", "Design"),
    ("AfterFX.exe", "Video Editing"),
    ("Adobe Premiere Pro.exe", "Video Editing"),
    ("Resolve.exe", "Video Editing"),
    ("Teams.exe", "Communication"),
    ("ms-teams.exe", "Communication"),
    ("Slack.exe", "Communication"),
    ("Discord.exe", "Communication"),
    ("Zoom.exe", "Meetings"),
    ("KakaoTalk.exe", "SNS"),
    ("Telegram.exe", "SNS"),
    ("WhatsApp.exe", "SNS"),
    ("Spotify.exe", "Music"),
    ("vlc.exe", "Entertainment"),
    ("steam.exe", "Game"),
    ("LeagueClient.exe", "Game"),
    ("League of Legends.exe", "Game"),
    ("explorer.exe", "File Management"),
    ("Taskmgr.exe", "System & Utilities"),
    ("AcroRd32.exe", "Documentation"),
    ("Acrobat.exe", "Documentation"),
    ("Hwp.exe", "Documentation"),
    ("notepad.exe", "Documentation"),
    ("mstsc.exe", "System & Utilities"),
    ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "Browsing"),
    ("Google Chrome Helper (Renderer)", "Browsing"),
    ("Code Helper", "Development"),
    ("Microsoft Word", "Documentation"),
    ("Safari", "Browsing"),
    ("Finder", "File Management"),
    ("Terminal", "Development"),
    ("iTerm2", "Development"),
    ("Xcode", "Development"),
    ("Preview", "Documentation"),
    ("Notes", "Documentation"),
    ("Mail", "Communication"),
    ("Calendar", "Productivity"),
    ("Messages", "SNS"),
    ("Music", "Music"),
    ("Podcasts", "Music"),
    ("System Settings", "System & Utilities"),
    ("Activity Monitor", "System & Utilities"),
    ("loginwindow", "AFK"),
    ("ScreenSaverEngine", "AFK"),
    ("com.apple.Safari", "Browsing"),
    ("com.microsoft.VSCode", "Development"),
    ("com.google.Chrome", "Browsing"),
    ("org.gnome.Nautilus", "File Management"),
    ("org.gnome.Terminal", "Development"),
    ("gnome-terminal-server", "Development"),
    ("Gnome-terminal", "Development"),
    ("org.gnome.TextEditor", "Documentation"),
    ("gedit", "Documentation"),
    ("org.gnome.Calculator", "System & Utilities"),
    ("gnome-system-monitor", "System & Utilities"),
    ("gnome-control-center", "System & Utilities"),
    ("libreoffice-writer", "Documentation"),
    ("libreoffice-calc", "Productivity"),
    ("libreoffice-impress", "Productivity"),
    ("soffice", "Documentation"),
    ("firefox", "Browsing"),
    ("firefox_firefox", "Browsing"),
    ("google-chrome", "Browsing"),
    ("Google-chrome", "Browsing"),
    ("chromium-browser", "Browsing"),
    ("microsoft-edge", "Browsing"),
    ("brave-browser", "Browsing"),
    ("code", "Development"),
    ("Code", "Development"),
    ("code-oss", "Development"),
    ("jetbrains-idea", "Development"),
    ("jetbrains-pycharm", "Development"),
    ("jetbrains-pycharm-ce", "Development"),
    ("konsole", "Development"),
    ("org.kde.konsole", "Development"),
    ("Alacritty", "Development"),
    ("kitty", "Development"),
    ("org.wezfurlong.wezterm", "Development"),
    ("tilix", "Development"),
    ("xterm", "Development"),
    ("org.kde.dolphin", "File Management"),
    ("dolphin", "File Management"),
    ("thunar", "File Management"),
    ("nemo", "File Management"),
    ("org.telegram.desktop", "SNS"),
    ("TelegramDesktop", "SNS"),
    ("discord", "Communication"),
    ("Slack", "Communication"),
    ("spotify", "Music"),
    ("Spotify", "Music"),
    ("com.spotify.Client", "Music"),
    ("vlc", "Entertainment"),
    ("org.videolan.VLC", "Entertainment"),
    ("mpv", "Entertainment"),
    ("obs", "Video Editing"),
    ("com.obsproject.Studio", "Video Editing"),
    ("kdenlive", "Video Editing"),
    ("org.kde.kdenlive", "Video Editing"),
    ("gimp", "Design"),
    ("Gimp-2.10", "Design"),
    ("org.gimp.GIMP", "Design"),
    ("inkscape", "Design"),
    ("org.inkscape.Inkscape", "Design"),
    ("krita", "Design"),
    ("blender", "Design"),
    ("thunderbird", "Communication"),
    ("org.mozilla.Thunderbird", "Communication"),
    ("evolution", "Communication"),
    ("steam", "Game"),
    ("com.valvesoftware.Steam", "Game"),
    ("org.mozilla.firefox", "Browsing"),
    ("obsidian", "Documentation"),
    ("md.obsidian.Obsidian", "Documentation"),
    ("zoom", "Meetings"),
    ("us.zoom.Zoom", "Meetings"),
    ("keepassxc", "System & Utilities"),
    ("org.keepassxc.KeePassXC", "System & Utilities"),
    ("카카오톡", "SNS"),
    ("한컴오피스 한글", "Documentation"),
    ("한글", "Documentation"),
    ("네이버 웨일", "Browsing"),
    ("메모", "Documentation"),
    ("캘린더", "Productivity"),
    ("한글", "Documentation"),
    ("카카오톡", "SNS"),
    ("ＫａｋａｏＴａｌｋ", "SNS"),
    ("Explorateur de fichiers", "File Management"),
    ("Datei-Explorer", "File Management"),
    ("エクスプローラー", "File Management"),
    ("탐색기", "File Management"),
    ("파일 탐색기", "File Management"),
    ("시스템 설정", "System & Utilities"),
    ("작업 관리자", "System & Utilities"),
    ("Bloc-notes", "Documentation"),
    ("메모장", "Documentation"),
    ("계산기", "System & Utilities"),
]


@pytest.mark.parametrize(("app", "expected"), TRACKER_APPS)
def test_app_names_as_trackers_send_them(
    default_classifier: Classifier, app: str, expected: str
) -> None:
    d = default_classifier.classify(app, "", "")
    assert d.category == expected, d
    if expected == "Browsing":  # a browser app pattern: the URL decides, else Browsing
        assert default_classifier.is_browser(app)
    else:
        assert d.source == "app", d  # a pattern decided it: no default, no LLM
