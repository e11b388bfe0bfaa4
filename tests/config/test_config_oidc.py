"""``login.oidc``: external OpenID Connect providers, validated with every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.settings import OidcAllowedSettings, OidcClaimsSettings
from tests.config.test_config_schema import load, problems


def provider(**fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "corp",
        "issuer": "https://id.example.com",
        "client_id": "gateway",
        "client_secret": "s3cret",
    }
    entry.update(fields)
    return {key: value for key, value in entry.items() if value is not None}


def test_a_provider_with_the_defaults_of_the_contract() -> None:
    settings = load({"login.oidc": [provider()]})

    [corp] = settings.login.oidc
    assert corp.name == "corp"
    assert corp.label == "Sign in with corp"
    assert corp.issuer == "https://id.example.com"
    assert corp.client_secret == "s3cret"
    assert corp.scopes == ("openid", "email", "profile")
    assert corp.claims == OidcClaimsSettings(
        username="preferred_username", email="email", name="name", roles="groups"
    )
    assert corp.allowed == OidcAllowedSettings()
    assert "s3cret" not in repr(settings)
    assert settings.login.provider("corp") is corp


def test_every_key_of_the_contract(tmp_path: Path) -> None:
    secret = tmp_path / "oidc-corp"
    secret.write_text("from-a-file\n")
    entry = provider(
        client_secret=None,
        client_secret_file=str(secret),
        label="Sign in with Corp SSO",
        scopes=["openid", "email", "profile", "groups"],
        claims={"username": "upn", "email": "mail", "name": "display", "roles": "roles"},
        allowed={"email_domains": ["Example.com"], "users": ["bob"], "roles": ["staff"]},
    )
    [corp] = load({"login.oidc": [entry]}).login.oidc

    assert corp.client_secret == "from-a-file"
    assert corp.label == "Sign in with Corp SSO"
    assert corp.scopes == ("openid", "email", "profile", "groups")
    assert corp.claims == OidcClaimsSettings(
        username="upn", email="mail", name="display", roles="roles"
    )
    assert corp.allowed == OidcAllowedSettings(
        email_domains=("example.com",), users=("bob",), roles=("staff",)
    )


def test_a_public_client_has_no_secret() -> None:
    [corp] = load({"login.oidc": [provider(client_secret=None)]}).login.oidc
    assert corp.client_secret is None


def test_providers_alone_are_enough_to_sign_in() -> None:
    settings = load({"users": {}, "login.oidc": [provider()]})
    assert not any("nobody can sign in" in warning for warning in settings.warnings)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            provider(name="Corp SSO"),
            "login.oidc[0].name: expected lower-case letters, digits and '-' (at most 64), "
            'got "Corp SSO"',
        ),
        (provider(name=None), "login.oidc[0].name: required"),
        (provider(issuer=None), "login.oidc[0].issuer: required"),
        (provider(client_id=None), "login.oidc[0].client_id: required"),
        (
            provider(issuer="http://id.example.com"),
            "login.oidc[0].issuer: expected an https:// URL (http only for a loopback host), "
            'got "http://id.example.com"',
        ),
        (
            provider(issuer="https://id.example.com/?realm=x"),
            "login.oidc[0].issuer: an issuer has no query, fragment or user information",
        ),
        (provider(issuer="id.example.com"), "login.oidc[0].issuer: expected an https:// URL"),
        (
            provider(client_secret_file="/nonexistent/secret"),
            "login.oidc[0]: give either client_secret or client_secret_file, not both",
        ),
        (
            provider(scopes=["email", "profile"]),
            'login.oidc[0].scopes: must include "openid"',
        ),
        (provider(scopes="openid"), "login.oidc[0].scopes: expected a list of scopes"),
        (provider(claims={"group": "groups"}), "login.oidc[0].claims.group: unknown key"),
        (provider(claims={"roles": ["a"]}), "login.oidc[0].claims.roles: expected a string"),
        (
            provider(allowed={"email_domains": "example.com"}),
            "login.oidc[0].allowed.email_domains: expected a list of domain names",
        ),
        (
            provider(allowed={"email_domains": ["@@"]}),
            "login.oidc[0].allowed.email_domains[0]: expected a domain name",
        ),
        (provider(allowed={"teams": ["x"]}), "login.oidc[0].allowed.teams: unknown key"),
        (provider(tenant="x"), "login.oidc[0].tenant: unknown key"),
    ],
    ids=[
        "name-not-a-slug",
        "name-missing",
        "issuer-missing",
        "client-id-missing",
        "issuer-http-remote",
        "issuer-with-query",
        "issuer-not-a-url",
        "both-secrets",
        "scopes-without-openid",
        "scopes-not-a-list",
        "unknown-claim-key",
        "claim-not-a-name",
        "domains-not-a-list",
        "domain-invalid",
        "unknown-allowed-rule",
        "unknown-provider-key",
    ],
)
def test_invalid_provider_is_reported_with_its_path(entry: dict[str, Any], expected: str) -> None:
    found = problems({"login.oidc": [entry]})
    assert any(problem.startswith(expected) for problem in found), found


def test_duplicate_names_and_every_problem_at_once() -> None:
    found = problems(
        {"login.oidc": [provider(), provider(), provider(name="b", issuer=None, client_id="")]}
    )
    assert found == [
        'login.oidc[1].name: duplicate provider name "corp", already at login.oidc[0]',
        "login.oidc[2].issuer: required: the provider's issuer URL",
        "login.oidc[2].client_id: must not be empty",
    ]


def test_an_http_issuer_on_loopback_is_accepted() -> None:
    [corp] = load({"login.oidc": [provider(issuer="http://127.0.0.1:9000/oidc")]}).login.oidc
    assert corp.issuer == "http://127.0.0.1:9000/oidc"


def _rules_naming(users: list[str]) -> dict[str, Any]:
    return {"routes[0].access": {"users": users}}


def test_a_rule_naming_a_provider_user_is_not_taken_for_a_typo() -> None:
    settings = load({"login.oidc": [provider()], **_rules_naming(["erin"])})
    assert settings.warnings == ()


def test_without_providers_a_rule_naming_an_unknown_user_is_a_warning() -> None:
    settings = load(_rules_naming(["erin"]))
    assert [w for w in settings.warnings if "no user" in w]


def test_with_two_providers_a_rule_naming_users_warns_that_names_are_not_scoped() -> None:
    second = provider(name="partner", issuer="https://id.partner.example")
    settings = load({"login.oidc": [provider(), second], **_rules_naming(["erin"])})
    [warning] = settings.warnings
    assert warning.startswith("routes[0].access.users:")
    assert "not told apart by provider" in warning
    assert "corp, partner" in warning and "name roles instead" in warning
    roles_only = load({"login.oidc": [provider(), second], "routes[0].access": {"roles": ["x"]}})
    assert roles_only.warnings == ()
