"""Send the LLM only what it needs (#15 §4): the app, the title (bounded) and the URL's
host and path; never its user info, port, query, fragment or `;parameters`."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomocore.classifiers.llm import prompt
from pomocore.classifiers.llm.prompt import MAX_FIELD_CHARS, outbound_fields, outbound_url
from pomocore.core.decision import ClassKey
from tests.support.fake_llm import FakeLLM
from tests.support.resolver import MakeResolver


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://github.com/org/repo", "github.com/org/repo"),
        ("https://alice:hunter2@bank.example/reset?token=T0K#frag", "bank.example/reset"),
        ("http://u@host.example:8443/a/b;jsessionid=S3SS?x=1", "host.example/a/b"),
        ("https://user:p@ss@evil.example/x", "evil.example/x"),  # the last @ ends user info
        ("https:\\\\u:pw@h.example\\p", "h.example/p"),  # backslashes as browsers read them
        ("https:/u:pw@h.example/p", "https"),  # malformed: a path holding @ is dropped
        ("user:pass@example.com/path?q", "example.com/path"),  # no scheme, as trackers send
        ("github.com/x#readme", "github.com/x"),
        ("https://example.com#a?b", "example.com"),  # a fragment holding ?
        ("https://example.com?a#b", "example.com"),
        ("https://[::1]:8080/admin?k=v", "[::1]/admin"),
        ("mailto:bob@mail.example?subject=s", "mailto:mail.example"),
        ("about:blank", "about:blank"),
        ("chrome://settings/passwords", "chrome:settings"),
        ("file:///home/alice/secret.pdf", "file:"),
        ("data:text/html,<b>secret</b>", "data:text"),
        ("", ""),
        ("https://medium.com/@author/post", "medium.com"),  # a path holding @: dropped
    ],
)
def test_outbound_url(url: str, sent: str) -> None:
    assert outbound_url(url) == sent


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        ("full", {"app": "Chrome", "url": "bank.example/reset", "title": "Reset password"}),
        ("host", {"app": "Chrome", "url": "bank.example", "title": ""}),
        ("app", {"app": "Chrome", "url": "", "title": ""}),
    ],
)
def test_send_modes(send: prompt.Send, expected: dict[str, str]) -> None:
    key = ("Chrome", "https://a:b@bank.example/reset?t=1", "Reset password")
    assert outbound_fields(key, send) == expected


def test_fields_are_bounded() -> None:
    key = ("A" * 1000, "https://h.example/" + "p" * 1000, "T" * 1000)
    assert all(len(v) <= MAX_FIELD_CHARS for v in outbound_fields(key).values())


# Secrets are drawn from an alphabet (upper case, `!`) that hosts and paths never hold here,
# so "the secret's text is absent" cannot be fooled by a coincidence in the host or path.
_SECRET = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ!$'()*+,=:@", min_size=4, max_size=30).filter(
    lambda s: any(c.isalpha() for c in s)
)
_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_PATH = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~%", max_size=10), max_size=4)


@given(
    scheme=st.sampled_from(["https://", "http://", "", "HTTPS://", "ftp://", "https:\\\\"]),
    userinfo=st.one_of(st.none(), _SECRET),
    labels=st.lists(_LABEL, min_size=1, max_size=4),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_PATH,
    query=st.one_of(st.none(), _SECRET, st.just("")),
    fragment=st.one_of(st.none(), _SECRET, st.just("")),
    send=st.sampled_from(["full", "host", "app"]),
)
def test_no_userinfo_query_or_fragment_is_ever_sent(
    scheme: str,
    userinfo: str | None,
    labels: list[str],
    port: int | None,
    path: list[str],
    query: str | None,
    fragment: str | None,
    send: prompt.Send,
) -> None:
    host = ".".join(labels)
    url = scheme + (f"{userinfo}@" if userinfo is not None else "") + host
    url += f":{port}" if port is not None else ""
    url += "".join(f"/{p}" for p in path)
    url += f"?{query}" if query is not None else ""
    url += f"#{fragment}" if fragment is not None else ""
    text = json.dumps(outbound_fields(("Browser", url, "title"), send))
    for secret in (userinfo, query, fragment):
        if secret:
            assert secret not in text
    sent = outbound_fields(("Browser", url, "title"), send)["url"]
    assert "?" not in sent and "#" not in sent and "@" not in sent
    if send != "app":
        assert sent.startswith(host.lower())


@given(st.text(max_size=400))
def test_any_text_as_url_leaves_no_query_or_fragment(url: str) -> None:
    sent = outbound_url(url)
    assert "?" not in sent and "#" not in sent and "@" not in sent
    assert len(sent) <= MAX_FIELD_CHARS


SECRETS = ("alice", "hunter2", "s3cr3tT0ken", "sig=AbCdEf", "frag-secret", "jsess1onID")
LEAKY: list[ClassKey] = [
    (
        "Google Chrome",
        "https://alice:hunter2@bank.example/reset;jsessionid=jsess1onID"
        "?token=s3cr3tT0ken&sig=AbCdEf#frag-secret",
        "Reset your password",
    ),
    ("Firefox", "alice:hunter2@files.example/share?sig=AbCdEf#frag-secret", "Shared file"),
]


async def test_a_request_body_never_carries_a_password_token_or_fragment(
    fake_llm: FakeLLM, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(window_s=0.0)
    answered = await resolver.resolve(LEAKY, {k: {"u1"} for k in LEAKY})
    assert len(answered) == 2
    bodies = fake_llm.bodies()
    assert bodies
    for body in bodies:
        for secret in SECRETS:
            assert secret not in body
    assert "bank.example/reset" in bodies[0] and "Reset your password" in bodies[0]


async def test_host_mode_sends_neither_paths_nor_titles(
    fake_llm: FakeLLM, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(window_s=0.0, send="host")
    await resolver.resolve(LEAKY)
    items = [i for r in fake_llm.requests for i in r.items]
    assert {(i["url"], i["title"]) for i in items} == {
        ("bank.example", ""),
        ("files.example", ""),
    }
