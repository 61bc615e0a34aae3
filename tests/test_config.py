"""Configuration: every problem names the file and the key path; defaults are sensible."""

from __future__ import annotations

from pathlib import Path

import pytest

from zivmilter.core import config
from zivmilter.core.facts import load_facts
from zivmilter.core.levels import Level
from zivmilter.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "examples" / "zivmilter.yaml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "zivmilter.yaml"
    path.write_text(text)
    return str(path)


def test_shipped_example_is_valid() -> None:
    cfg = config.load(str(EXAMPLE))
    assert cfg.organization.domains == ("hospital.example",)
    assert cfg.policy.transport_security_compliance is Level.PKIX


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "organization:\n  domains: [Example.ORG.]\n"))
    assert cfg.organization.domains == ("example.org",)
    assert cfg.organization.nta7516 is False
    assert cfg.policy.transport_security_compliance is Level.NONE
    assert cfg.policy.methods.sms and cfg.policy.methods.access_code
    assert cfg.policy.methods.remember_device_days == 0  # off unless the organization says
    assert cfg.policy.outbound_direct_delivery.domains == ()
    assert cfg.milter.socket == "unix:/run/zivmilter/zivmilter.sock"
    assert cfg.selection.mode == "all"


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, "organization: {domains: [a.example]}\nstore: {path: data}\n")
    )
    assert cfg.store.path == str(tmp_path / "data")


def test_null_compliance_means_none(tmp_path: Path) -> None:
    text = "organization: {domains: [a.example]}\npolicy: {transport_security_compliance: null}\n"
    assert config.load(write(tmp_path, text)).policy.transport_security_compliance is Level.NONE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "organization: {domains: [a.example]}\npolicy: {transport_security_compliance: pkx}\n",
            "policy.transport_security_compliance: 'pkx' is not one of none, tls, pkix, pane, dane",
        ),
        ("organization: {name: x}\n", "organization.domains: required"),
        ("{}\n", "organization.domains: required"),
        ("organization: {domains: []}\n", "organization.domains: required: list at least one"),
        ("organization: {domains: null}\n", "organization.domains: required: list at least one"),
        ("organization: {domains: [a.example], color: red}\n", "organization.color: unknown key"),
        ("organization: {domains: [a.example]}\nmilterz: {}\n", "milterz: unknown key"),
        (
            "organization: {domains: [nodot]}\n",
            "organization.domains: 'nodot' is not a domain name",
        ),
        ("organization: {domains: a.example}\n", "organization.domains: expected a list"),
        (
            "organization: {domains: [a.example], nta7516: maybe}\n",
            "organization.nta7516: expected true or false",
        ),
        (
            "organization: {domains: [a.example]}\npolicy: {methods: {sms: 1}}\n",
            "policy.methods.sms: expected true or false",
        ),
        (
            "organization: {domains: [a.example]}\npolicy: {methods: {remember_device_days: -1}}\n",
            "policy.methods.remember_device_days: -1 is not 0 (off) to 400 days",
        ),
        (
            "organization: {domains: [a.example]}\npolicy: {methods: {remember_device_days: x}}\n",
            "policy.methods.remember_device_days: expected",
        ),
        (
            "organization: {domains: [a.example]}\n"
            "policy: {outbound_direct_delivery: {domains: ['*.x.example']}}\n",
            "policy.outbound_direct_delivery.domains: '*.x.example' is not a domain name",
        ),
        ("organization: {domains: [a.example]}\nmilter: {socket: 'tcp:25'}\n", "milter.socket"),
        (
            "organization: {domains: [a.example]}\nmilter: {socket: 'unix:'}\n",
            "milter.socket: 'unix:': a unix socket needs an absolute path",
        ),
        (
            "organization: {domains: [a.example]}\nportal: {listen: nothing}\n",
            "portal.listen: 'nothing' is not HOST:PORT",
        ),
        (
            "organization: {domains: [a.example]}\nreinject: {port: 70000}\n",
            "reinject.port: 70000 is not a TCP port",
        ),
        (
            "organization: {domains: [a.example]}\nsubmission: {trusted_networks: [10.0.0.0/33]}\n",
            "submission.trusted_networks",
        ),
        (
            "organization: {domains: [a.example]}\ntransport: {resolver: [dns.example]}\n",
            "transport.resolver: 'dns.example' is not a resolver address",
        ),
        ("organization: [\n", "not valid YAML (line"),
        (
            "organization: {domains: [a.example]}\norganization: {domains: [b.example]}\n",
            "organization: duplicate key on line 2 (first given on line 1)",
        ),
        (
            "organization: {domains: [a.example]}\npolicy:\n  methods:\n"
            "    sms: true\n    sms: false\n",
            "policy.methods.sms: duplicate key on line 5 (first given on line 4)",
        ),
        (
            "organization: {domains: [a.example, a.example], domains: [b.example]}\n",
            "organization.domains: duplicate key on line 1 (first given on line 1)",
        ),
        ("- just\n- a list\n", "(top level): expected a mapping"),
        (
            "organization: {domains: [a.example]}\nencryption: {pdf_max_bytes: 0}\n",
            "encryption.pdf_max_bytes: 0 must be greater than 0",
        ),
        (
            "organization: {domains: [a.example]}\nencryption: {pdf_max_bytes: 10MB}\n",
            "encryption.pdf_max_bytes: expected a whole number, got '10MB'",
        ),
        (
            "organization: {domains: [a.example]}\nencryption: {pdf_max_text_bytes: -1}\n",
            "encryption.pdf_max_text_bytes: -1 must be greater than 0",
        ),
        (
            "organization: {domains: [a.example]}\nencryption: {pdf_max_text_bytes: 256KiB}\n",
            "encryption.pdf_max_text_bytes: expected a whole number, got '256KiB'",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(path + ": ")
    assert message in str(info.value)


def test_submission_listeners(tmp_path: Path) -> None:
    text = (
        "organization: {domains: [a.example]}\n"
        "submission:\n  listeners:\n    submission: {trusted_networks: [], spf: false}\n"
    )
    cfg = config.load(write(tmp_path, text))
    assert cfg.submission.listeners["submission"].trusted_networks == ()
    assert cfg.submission.trusted_networks == ("127.0.0.0/8", "::1/128")
    bad = text.replace("spf: false", "spf: false, colour: red")
    where = r"submission\.listeners\.submission\.colour: unknown key"
    with pytest.raises(ConfigError, match=where):
        config.load(write(tmp_path, bad))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"/nonexistent\.yaml: cannot read"):
        config.load("/nonexistent.yaml")


def test_yaml_merge_keys_may_still_override(tmp_path: Path) -> None:
    text = (
        "organization: {domains: [a.example]}\n"
        "submission:\n  listeners:\n"
        "    a: &rules {spf: false, trusted_networks: []}\n"
        "    b:\n      <<: *rules\n      spf: true\n"
    )
    cfg = config.load(write(tmp_path, text))
    assert cfg.submission.listeners["a"].spf is False
    assert cfg.submission.listeners["b"].spf is True


def test_facts_file_refuses_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text("accounts: [a@x.example]\ntransport: {}\naccounts: [b@x.example]\n")
    with pytest.raises(ConfigError, match=r"facts\.yaml: accounts: duplicate key on line 3"):
        load_facts(str(path))


def test_facts_file_nta7516_list_and_mapping_forms(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text("nta7516: [care.example]\n")
    listed = load_facts(str(path)).nta7516("care.example")
    assert listed.compliant and listed.mx == () and listed.mx_transport is None
    path.write_text(
        "nta7516:\n"
        "  care.example:\n"
        "  zorg.example:\n"
        "    ntamx: [MX1.Zorg.example, mx2.zorg.example, mx1.zorg.example]\n"
        "    transport: {level: pkix, tls_version: tls1.3}\n"
    )
    facts = load_facts(str(path))
    assert facts.nta7516("care.example").compliant
    assert facts.nta7516("care.example").mx_transport is None
    zorg = facts.nta7516("zorg.example")
    assert zorg.compliant and zorg.mx == ("mx1.zorg.example", "mx2.zorg.example")
    assert zorg.mx_transport is not None
    assert zorg.mx_transport.level is Level.PKIX
    assert zorg.mx_transport.tls_version is not None
    assert zorg.mx_transport.tls_version.value == "tls1.3"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{transport: pkix}", r"nta7516\.z\.example\.ntamx: expected a non-empty list"),
        ("{ntamx: [mx.z.example]}", r"nta7516\.z\.example\.transport: the level .* is missing"),
        ("{ntamx: [mx.z.example], transport: best}", r"nta7516\.z\.example\.transport: 'best'"),
        ("{ntamx: ['[mx.z.example]:25'], transport: tls}", r"nta7516\.z\.example\.ntamx: "),
        ("{ntamx: [mx.z.1x], transport: tls}", r"cannot be a next hop"),
        ("{ntamx: [mx.z.example], transport: tls, via: x}", r"nta7516\.z\.example\.via: unknown"),
        ("pkix", r"nta7516\.z\.example: expected null or"),
    ],
)
def test_facts_file_nta7516_mapping_errors(tmp_path: Path, entry: str, problem: str) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text(f"nta7516:\n  z.example: {entry}\n")
    with pytest.raises(ConfigError, match=problem):
        load_facts(str(path))


def test_own_mail_from_defaults_to_the_first_organization_domain(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "organization:\n  domains: [hospital.example, b.example]\n"))
    assert cfg.organization.dsn_from == "MAILER-DAEMON@hospital.example"
    assert cfg.organization.portal_from == "noreply@hospital.example"
    text = "organization:\n  domains: [hospital.example, b.example]\n  mail_from: Post@B.example\n"
    cfg = config.load(write(tmp_path, text))
    assert cfg.organization.dsn_from == cfg.organization.portal_from == "post@b.example"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            "postmaster@elsewhere.example",
            "'postmaster@elsewhere.example' is not at an organization",
        ),
        ("nobody", ""),
    ],
)
def test_own_mail_from_must_be_an_address_at_an_organization_domain(
    tmp_path: Path, value: str, problem: str
) -> None:
    text = f"organization:\n  domains: [hospital.example]\n  mail_from: {value}\n"
    with pytest.raises(ConfigError, match=r"zivmilter\.yaml: organization\.mail_from: " + problem):
        config.load(write(tmp_path, text))


def test_organization_timezone_is_an_iana_name_utc_by_default(tmp_path: Path) -> None:
    text = "organization:\n  domains: [hospital.example]\n"
    assert config.load(write(tmp_path, text)).organization.timezone == "UTC"
    text += "  timezone: Europe/Amsterdam\n"
    assert config.load(write(tmp_path, text)).organization.timezone == "Europe/Amsterdam"


def test_german_is_a_notification_language(tmp_path: Path) -> None:
    text = "organization: {domains: [a.example]}\nnotification: {language: de}\n"
    assert config.load(write(tmp_path, text)).notification.language == "de"
    text = text.replace("language: de", "language: fr")
    with pytest.raises(ConfigError, match=r"notification\.language: 'fr' is not one of en, nl, de"):
        config.load(write(tmp_path, text))


@pytest.mark.parametrize("value", ["Europe", "Mars/Olympus_Mons", "../etc/passwd", "''"])
def test_organization_timezone_refuses_what_is_no_zone(tmp_path: Path, value: str) -> None:
    text = f"organization:\n  domains: [hospital.example]\n  timezone: {value}\n"
    pattern = r"zivmilter\.yaml: organization\.timezone: .* is not an IANA time zone name"
    with pytest.raises(ConfigError, match=pattern):
        config.load(write(tmp_path, text))


_ORG = "organization: {domains: [a.example]}\n"


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("{backend: mysql}", "store.backend: 'mysql' is not one of sqlite, postgresql"),
        ("{backend: postgresql}", "store.dsn: required with backend postgresql"),
        ("{dsn: 'host=db'}", "store.dsn: only for backend postgresql"),
        (
            "{backend: postgresql, dsn: 'host=db user=z password=hunter2'}",
            "store.dsn: the DSN holds a password",
        ),
        (
            "{backend: postgresql, dsn: 'postgresql://z:hunter2@db/zivmilter'}",
            "store.dsn: the DSN holds a password",
        ),
        (
            "{backend: postgresql, dsn: 'postgresql://z@db/zivmilter?password=hunter2'}",
            "store.dsn: the DSN holds a password",
        ),
        ("{backend: postgresql, dsn: 'host=db', pool_size: 0}", "store.pool_size: 0 must be"),
    ],
)
def test_store_backend_errors_name_the_key(tmp_path: Path, store: str, message: str) -> None:
    path = write(tmp_path, _ORG + f"store: {store}\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(path + ": ")
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_store_postgresql(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        _ORG + "store:\n  backend: postgresql\n  dsn: 'postgresql://zivmilter@db.example/zivmilter'"
        "\n  password_file: pgpass\n",
    )
    cfg = config.load(path)
    assert cfg.store.backend == "postgresql"
    assert cfg.store.dsn == "postgresql://zivmilter@db.example/zivmilter"
    assert cfg.store.password_file == str(tmp_path / "pgpass")
    assert cfg.store.pool_size == 10
