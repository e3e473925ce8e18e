"""Host extraction: case, port, user info, trailing dot, IPs, internal pages, junk."""

from __future__ import annotations

import pytest

from pomocore.classifiers.urls import host_suffixes, is_ip, split_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/redis/redis-py", ("https", "github.com", "/redis/redis-py")),
        ("HTTPS://GitHub.COM/orgs/acme", ("https", "github.com", "/orgs/acme")),
        ("https://github.com:443/x", ("https", "github.com", "/x")),
        ("https://user:pw@github.com/x", ("https", "github.com", "/x")),
        ("https://a@b@github.com/", ("https", "github.com", "/")),
        ("https://github.com./x", ("https", "github.com", "/x")),
        ("http://localhost:3000/dashboard", ("http", "localhost", "/dashboard")),
        ("localhost:3000/dashboard", ("", "localhost", "/dashboard")),
        ("github.com/redis", ("", "github.com", "/redis")),
        ("//cdn.example.com/x.js", ("", "cdn.example.com", "/x.js")),
        ("http://192.168.0.10:8080/", ("http", "192.168.0.10", "/")),
        ("http://[::1]:8000/api", ("http", "[::1]", "/api")),
        ("https://www.google.com/search?q=netflix.com", ("https", "www.google.com", "/search")),
        ("https://x.com?next=https://github.com", ("https", "x.com", "")),
        ("https://x.com#github.com/", ("https", "x.com", "")),
        ("https://acme.atlassian.net/WIKI/spaces", ("https", "acme.atlassian.net", "/wiki/spaces")),
        ("chrome://newtab/", ("chrome", "newtab", "/")),
        ("about:blank", ("about", "blank", "")),
        ("about:", ("about", "", "")),
        ("edge://settings/privacy", ("edge", "settings", "/privacy")),
        ("file:///Users/me/a.pdf", ("file", "", "/users/me/a.pdf")),
        ("", ("", "", "")),
        ("   ", ("", "", "")),
        ("https://", ("https", "", "")),
        ("https://exa mple.com", ("https", "exa mple.com", "")),
        # junk: whatever comes out, the host is never github.com
        ("https:\\\\evil.com\\github.com", ("", "https", "//evil.com/github.com")),
    ],
)
def test_split_url(url: str, expected: tuple[str, str, str]) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize(
    ("host", "ip"),
    [("10.0.0.1", True), ("[::1]", True), ("1.2.3", False), ("github.com", False), ("", False)],
)
def test_is_ip(host: str, ip: bool) -> None:
    assert is_ip(host) is ip


def test_host_suffixes_stop_at_label_boundaries() -> None:
    assert host_suffixes("a.b.example.com") == [
        "a.b.example.com",
        "b.example.com",
        "example.com",
        "com",
    ]
