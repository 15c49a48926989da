"""Settings precedence and validation: pure functions over real TOML files; nothing faked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nexusd.core.errors import ConfigError
from nexusd.settings import Settings, describe, load_settings
from nexusd.settings_toml import render

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "nexusd.example.toml"


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.http.port == 8080
    assert settings.payloads.valid_for == 24 * 3600
    assert settings.sqlite_path == Path(".nexusd/checkpoints.sqlite3")


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "nexusd.toml"
    config.write_text('[http]\nport = 9000\nhost = "10.0.0.1"\n[submission]\nrate = 5\n')
    settings = load_settings(
        toml_path=config,
        environ={"NEXUS__HTTP__PORT": "9100", "NEXUS__SUBMISSION__BURST": "7", "HOME": "/x"},
        defaults={"http.host": "127.0.0.1", "http.port": 1},
        overrides={"http.port": "9200"},
    )
    assert settings.http.port == 9200  # flag beats env beats file beats mode default
    assert settings.http.host == "10.0.0.1"  # file beats mode default
    assert settings.submission.rate == 5.0
    assert settings.submission.burst == 7


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"NEXUS__HTTP__PROT": "1"}, "NEXUS__HTTP__PROT: unknown key http.prot"),
        ({"NEXUS__NOPE__X": "1"}, "NEXUS__NOPE__X: unknown section 'nope'"),
        ({"NEXUS__PORT": "1"}, "NEXUS__PORT: expected NEXUS__SECTION__KEY"),
        ({"NEXUS__HTTP__PORT": "eighty"}, "NEXUS__HTTP__PORT: invalid value 'eighty'"),
        ({"NEXUS__PAYLOADS__VALID_FOR": "1 day"}, "NEXUS__PAYLOADS__VALID_FOR: invalid value"),
        ({"NEXUS__STORE__KIND": "mysql"}, "expected one of sqlite, postgres, memory"),
        ({"NEXUS__HTTP__MAX_PAYLOAD_SIZE": "lots"}, "expected bytes or a quantity"),
        ({"NEXUS__SHUTDOWN__GRACE": "-5s"}, "must not be negative"),
    ],
)
def test_bad_environment_names_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=environ)


def test_bad_toml_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[kube]\nruntime_namespace = 'n'\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: kube.bogus: unknown key kube.bogus"):
        load_settings(toml_path=config, environ={})
    config.write_text("port = 1\n")
    with pytest.raises(ConfigError, match="port must be a \\[section\\] table"):
        load_settings(toml_path=config, environ={})
    config.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(toml_path=config, environ={})
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings(toml_path=tmp_path / "missing.toml", environ={})


def test_units() -> None:
    settings = load_settings(
        environ={
            "NEXUS__HTTP__MAX_PAYLOAD_SIZE": "1.5Mi",
            "NEXUS__SUBMISSION__RETRY_BASE_DELAY": "250ms",
            "NEXUS__KUBE__RESYNC": "2",
        }
    )
    assert settings.http.max_payload_size == 1536 * 1024
    assert settings.submission.retry_base_delay == 0.25
    assert settings.kube.resync == 2.0


def test_example_file_documents_every_key_with_its_default() -> None:
    document = tomllib.loads(EXAMPLE.read_text())
    text = EXAMPLE.read_text()
    documented = {(section, key) for section, table in document.items() for key in table}
    expected = {(section, key) for section, key, *_ in describe()}
    assert documented == expected
    for _, _, _, env, doc in describe():
        assert f"Env: {env}" in text
        assert doc in text
    # loading the example gives exactly the defaults, and it is what `nexusd config` prints
    assert load_settings(toml_path=EXAMPLE, environ={}) == Settings()
    assert text == render(Settings()), "regenerate it: nexusd config > " + str(EXAMPLE)
