"""Property tests: no input crashes the classifier; hosts match only at label boundaries."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pomocore.classifiers.engine import Classifier
from pomocore.classifiers.urls import split_url
from pomocore.core.categories import CATEGORY_SET
from tests.support.patterns import make_classifier

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).filter(
    lambda s: s != "www"
)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
URLISH = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda scheme, user, host, port, rest: f"{scheme}{user}{host}{port}{rest}",
        st.sampled_from(["", "http://", "HTTPS://", "chrome://", "about:", "//", "ftp://"]),
        st.sampled_from(["", "u@", "u:p@", "@"]),
        st.one_of(DOMAIN, st.text(max_size=20)),
        st.sampled_from(["", ":80", ":", ":x", "."]),
        st.text(max_size=30),
    ),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(app=st.text(max_size=60), url=URLISH, title=st.text(max_size=60))
def test_no_input_crashes_the_matcher(
    default_classifier: Classifier, app: str, url: str, title: str
) -> None:
    # `_classify` is the unguarded path: `classify` would hide an exception as a default.
    d = default_classifier._classify(app, url, title)
    assert d.category in CATEGORY_SET
    assert d.source in ("app", "domain", "title", "default")
    split_url(url)


@settings(max_examples=300)
@given(pattern=DOMAIN, host=DOMAIN)
def test_a_host_matches_only_at_a_label_boundary(pattern: str, host: str) -> None:
    clf = make_classifier(
        {"category": "Browsing", "appPatterns": ["Arc"]},
        {"category": "Development", "domainPatterns": [pattern]},
    )
    d = clf.classify("Arc", f"https://{host}/{pattern}?q={pattern}", "")
    expected = host == pattern or host.endswith("." + pattern)
    expected = expected and not (pattern[-1].isdigit() and host != pattern)  # numeric: exact
    assert (d.category == "Development") is expected


@settings(max_examples=200)
@given(
    pattern=DOMAIN,
    prefix=st.sampled_from(["", "a.", "www.", "x-y."]),
    user=st.sampled_from(["", "me@", "me:pw@"]),
    port=st.sampled_from(["", ":8080"]),
    dot=st.sampled_from(["", "."]),
    upper=st.booleans(),
)
def test_case_port_userinfo_and_trailing_dot_do_not_change_the_host(
    pattern: str, prefix: str, user: str, port: str, dot: str, upper: bool
) -> None:
    host = prefix + pattern + dot
    host = host.upper() if upper else host
    assert split_url(f"https://{user}{host}{port}/p")[1] == (prefix + pattern).lower()
