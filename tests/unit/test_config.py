"""The YAML config: the demo file, ${VAR:-default} expansion, one-line errors that name the field, tenant keys."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway_core.config import DEMO_CONFIG, GatewayConfig, load_config, sha256_hex
from gateway_core.errors import ConfigError

GOOD_PARTNER = """\
    adapter: openai
    base_url: http://partner.example/v1
    model: m1
"""


def write_config(tmp_path: Path, text: str, name: str = "fedgate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config_error(path: Path, home: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, home=home)
    message = str(caught.value)
    assert "\n" not in message, f"config errors must be one line, got: {message!r}"
    assert "Traceback" not in message
    return message


def two_partners(extra_a: str = "", extra_b: str = "", tenants: str = "  t:\n    api_key: k\n") -> str:
    return (
        "partners:\n"
        "  a:\n"
        "    adapter: openai\n"
        "    base_url: http://a.example/v1\n"
        "    model: m\n"
        f"{extra_a}"
        "  b:\n"
        "    adapter: anthropic\n"
        "    base_url: https://b.example\n"
        "    model: m\n"
        f"{extra_b}"
        "tenants:\n"
        f"{tenants}"
    )


# --- the demo config ----------------------------------------------------------------------------------------


def test_demo_config_loads_with_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGATE_SIMULATOR_URL", raising=False)
    config = load_config()
    assert isinstance(config, GatewayConfig)
    assert config.source == str(DEMO_CONFIG)
    assert set(config.partners) == {"sim-openai", "sim-anthropic"}
    openai = config.partner("sim-openai")
    assert openai.name == "sim-openai"  # the mapping key becomes the name
    assert openai.adapter == "openai"
    assert openai.base_url == "http://127.0.0.1:8790/sim-openai/v1"
    assert openai.fallback == ["sim-anthropic"]
    assert config.partner("sim-anthropic").adapter == "anthropic"
    assert config.partner("sim-anthropic").base_url == "http://127.0.0.1:8790/sim-anthropic"
    assert config.tenants["dev"].admin is True


def test_demo_config_follows_the_simulator_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGATE_SIMULATOR_URL", "http://sim.internal:9000")
    config = load_config()
    assert config.partner("sim-openai").base_url == "http://sim.internal:9000/sim-openai/v1"
    assert config.partner("sim-anthropic").base_url == "http://sim.internal:9000/sim-anthropic"


# --- ${VAR:-default} expansion -------------------------------------------------------------------------------


def test_env_expansion_uses_the_variable_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FG_TEST_PARTNER_URL", "https://from-env.example/v1")
    monkeypatch.setenv("FG_TEST_TENANT_KEY", "tenant-secret")
    path = write_config(tmp_path, """\
        partners:
          a:
            adapter: openai
            base_url: ${FG_TEST_PARTNER_URL:-http://default.example/v1}
            model: m
        tenants:
          t:
            api_key: ${FG_TEST_TENANT_KEY}
        """)
    config = load_config(path)
    assert config.partner("a").base_url == "https://from-env.example/v1"
    assert config.tenant_for_key("tenant-secret") is config.tenants["t"]


def test_env_expansion_falls_back_to_the_default_when_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FG_TEST_PARTNER_URL", raising=False)
    path = write_config(tmp_path, """\
        partners:
          a:
            adapter: openai
            base_url: ${FG_TEST_PARTNER_URL:-http://default.example/v1}
            model: m
        tenants:
          t:
            api_key: k
        """)
    assert load_config(path).partner("a").base_url == "http://default.example/v1"


def test_env_expansion_uses_the_default_when_the_variable_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FG_TEST_PARTNER_URL", "")
    path = write_config(tmp_path, """\
        partners:
          a:
            adapter: openai
            base_url: ${FG_TEST_PARTNER_URL:-http://default.example/v1}
            model: m
        tenants:
          t:
            api_key: k
        """)
    assert load_config(path).partner("a").base_url == "http://default.example/v1"


@pytest.mark.parametrize("secret", ["123456", "*starts-with-star"])
def test_env_values_are_taken_literally_not_parsed_as_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("FG_TEST_TENANT_KEY", secret)
    path = write_config(tmp_path, two_partners(tenants="  t:\n    api_key: ${FG_TEST_TENANT_KEY}\n"))
    config = load_config(path)
    assert config.tenant_for_key(secret) is config.tenants["t"]


# --- one-line errors naming the field and the fix ------------------------------------------------------------


def test_unknown_adapter_names_the_field_and_the_allowed_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners().replace("adapter: openai", "adapter: cohere"))
    message = config_error(path)
    assert str(path) in message
    assert "partners.a.adapter" in message
    for allowed in ("openai", "anthropic", "generic"):
        assert allowed in message


def test_missing_base_url_names_the_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners().replace("    base_url: http://a.example/v1\n", ""))
    message = config_error(path)
    assert "partners.a.base_url" in message
    assert "required" in message.lower()


@pytest.mark.parametrize("url", ["ftp://a.example/v1", "a.example/v1", "localhost:8000"])
def test_non_http_base_url_names_the_field_and_the_fix(tmp_path: Path, url: str) -> None:
    path = write_config(tmp_path, two_partners().replace("http://a.example/v1", url))
    message = config_error(path)
    assert "partners.a.base_url" in message
    assert "http://" in message and "https://" in message


def test_base_url_trailing_slash_is_dropped(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners().replace("http://a.example/v1", "http://a.example/v1/"))
    assert load_config(path).partner("a").base_url == "http://a.example/v1"


def test_unknown_fallback_partner_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(extra_a="    fallback: [b, nobody]\n"))
    message = config_error(path)
    assert "partners.a.fallback" in message
    assert "'nobody'" in message


def test_fallback_cycle_is_named_with_the_fix(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(extra_a="    fallback: [b]\n", extra_b="    fallback: [a]\n"))
    message = config_error(path)
    assert "a -> b -> a" in message
    assert "remove" in message


def test_self_fallback_is_a_cycle(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(extra_a="    fallback: [a]\n"))
    assert "a -> a" in config_error(path)


def test_longer_cycle_below_the_start_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, """\
        partners:
          a: {adapter: openai, base_url: http://a.example, model: m, fallback: [b]}
          b: {adapter: openai, base_url: http://b.example, model: m, fallback: [c]}
          c: {adapter: openai, base_url: http://c.example, model: m, fallback: [b]}
        tenants:
          t: {api_key: k}
        """)
    assert "b -> c -> b" in config_error(path)


def test_diamond_fallback_is_not_a_cycle(tmp_path: Path) -> None:
    path = write_config(tmp_path, """\
        partners:
          a: {adapter: openai, base_url: http://a.example, model: m, fallback: [b, c]}
          b: {adapter: openai, base_url: http://b.example, model: m, fallback: [d]}
          c: {adapter: openai, base_url: http://c.example, model: m, fallback: [d]}
          d: {adapter: openai, base_url: http://d.example, model: m}
        tenants:
          t: {api_key: k}
        """)
    assert load_config(path).partner("a").fallback == ["b", "c"]


def test_tenant_without_a_key_source_names_the_tenant_and_the_choices(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(tenants="  nokey:\n    admin: true\n"))
    message = config_error(path)
    assert "tenants.nokey" in message
    for source in ("api_key", "api_key_sha256", "api_key_file"):
        assert source in message


def test_tenant_naming_an_unknown_partner_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(tenants="  t:\n    api_key: k\n    partners: [a, zzz]\n"))
    message = config_error(path)
    assert "tenants.t.partners" in message
    assert "'zzz'" in message


def test_unknown_field_is_refused_by_name(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(extra_a="    timeout: 5\n"))
    message = config_error(path)
    assert "partners.a.timeout" in message


def test_invalid_yaml_is_one_line_asking_to_fix_the_syntax(tmp_path: Path) -> None:
    path = write_config(tmp_path, "partners:\n  a: [unclosed\ntenants: {}\n")
    message = config_error(path)
    assert str(path) in message
    assert "not valid YAML" in message
    assert "fix the syntax" in message


def test_top_level_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "- just\n- a list\n")
    message = config_error(path)
    assert "partners" in message and "tenants" in message


def test_partners_as_a_list_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    path = write_config(tmp_path, "partners:\n  - a\n  - b\ntenants:\n  t:\n    api_key: k\n")
    message = config_error(path)
    assert "partners" in message


def test_missing_file_says_what_to_set(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = config_error(missing)
    assert str(missing) in message
    assert "does not exist" in message
    assert "FEDGATE_CONFIG" in message


# --- tenant lookup by key ------------------------------------------------------------------------------------


def test_tenant_lookup_by_plain_api_key(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, two_partners(tenants="  t:\n    api_key: plain-key\n")))
    assert config.tenant_for_key("plain-key") is config.tenants["t"]
    assert config.tenants["t"].name == "t"
    assert config.tenant_for_key("plain-key ") is None
    assert config.tenant_for_key("other") is None


def test_tenant_lookup_by_sha256(tmp_path: Path) -> None:
    digest = sha256_hex("hashed-key")
    config = load_config(write_config(tmp_path, two_partners(tenants=f"  h:\n    api_key_sha256: {digest}\n")))
    assert config.tenant_for_key("hashed-key") is config.tenants["h"]
    assert config.tenant_for_key(digest) is None  # the digest itself is not a key


def test_tenant_lookup_by_key_file_relative_to_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dev-api-key").write_text("file-key\n")  # trailing newline is stripped
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    path = write_config(config_dir, two_partners(tenants="  dev:\n    api_key_file: dev-api-key\n"))
    config = load_config(path, home=home)
    assert config.tenants["dev"].api_key_file == str(home / "dev-api-key")
    assert config.tenant_for_key("file-key") is config.tenants["dev"]
    assert config.tenant_for_key("file-key\n") is None


def test_tenant_key_file_absolute_path_is_kept(tmp_path: Path) -> None:
    key_file = tmp_path / "elsewhere.key"
    key_file.write_text("abs-key")
    path = write_config(tmp_path, two_partners(tenants=f"  dev:\n    api_key_file: {key_file}\n"))
    config = load_config(path, home=tmp_path / "unused-home")
    assert config.tenants["dev"].api_key_file == str(key_file)
    assert config.tenant_for_key("abs-key") is config.tenants["dev"]


def test_tenant_with_missing_key_file_matches_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, two_partners(tenants="  dev:\n    api_key_file: not-there\n  t:\n    api_key: k\n"))
    config = load_config(path, home=tmp_path)
    assert config.tenant_for_key("") is None
    assert config.tenant_for_key("k") is config.tenants["t"]


def test_several_tenants_resolve_to_their_own_names(tmp_path: Path) -> None:
    home = tmp_path
    (home / "kf").write_text("key-c")
    tenants = (
        "  alpha:\n    api_key: key-a\n"
        f"  beta:\n    api_key_sha256: {sha256_hex('key-b')}\n"
        "  gamma:\n    api_key_file: kf\n    partners: [b]\n"
    )
    config = load_config(write_config(tmp_path, two_partners(tenants=tenants)), home=home)
    found = {key: getattr(config.tenant_for_key(key), "name", None) for key in ("key-a", "key-b", "key-c")}
    assert found == {"key-a": "alpha", "key-b": "beta", "key-c": "gamma"}
    assert config.tenants["gamma"].partners == ["b"]
    assert config.tenants["alpha"].partners is None


# --- several keys per tenant (rotation) ----------------------------------------------------------------------


def test_api_key_sha256_takes_a_list_of_digests(tmp_path: Path) -> None:
    tenants = f"  t:\n    api_key_sha256:\n      - {sha256_hex('new-key')}\n      - {sha256_hex('old-key')}\n"
    config = load_config(write_config(tmp_path, two_partners(tenants=tenants)))
    assert config.tenant_for_key("new-key") is config.tenants["t"]
    assert config.tenant_for_key("old-key") is config.tenants["t"]
    assert config.tenant_for_key("other-key") is None
    assert config.tenants["t"].api_key_sha256 == [sha256_hex("new-key"), sha256_hex("old-key")]


def test_a_single_digest_string_is_still_accepted(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, two_partners(tenants=f"  t:\n    api_key_sha256: {sha256_hex('k')}\n")))
    assert config.tenants["t"].api_key_sha256 == [sha256_hex("k")]


@pytest.mark.parametrize("bad", [
    "not-a-digest-but-a-pasted-secret-key",
    sha256_hex("k").upper(),  # uppercase hex
    sha256_hex("k")[:-1],  # 63 characters
])
def test_a_bad_digest_names_tenant_and_field_and_never_quotes_the_value(tmp_path: Path, bad: str) -> None:
    path = write_config(tmp_path, two_partners(tenants=f"  billing:\n    api_key_sha256: {bad}\n"))
    message = config_error(path)
    assert "tenants.billing.api_key_sha256" in message
    assert "64 lowercase hex" in message
    assert bad not in message


def test_a_bad_digest_in_a_list_says_which_entry(tmp_path: Path) -> None:
    tenants = f"  billing:\n    api_key_sha256: [{sha256_hex('ok')}, pasted-secret-key-by-mistake]\n"
    message = config_error(write_config(tmp_path, two_partners(tenants=tenants)))
    assert "tenants.billing.api_key_sha256" in message
    assert "entry 2" in message
    assert "pasted-secret-key-by-mistake" not in message


def test_a_key_file_holds_one_key_a_line(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("new-key\n\n  old-key  \n\n")
    config = load_config(write_config(tmp_path, two_partners(tenants="  t:\n    api_key_file: keys\n")), home=tmp_path)
    assert config.tenant_for_key("new-key") is config.tenants["t"]
    assert config.tenant_for_key("old-key") is config.tenants["t"]
    assert config.tenant_for_key("") is None
    assert config.tenant_for_key("new-key\n\n  old-key") is None
    assert len(config.tenants["t"].key_digests) == 2


def test_a_key_file_that_cannot_be_read_names_the_tenant_not_the_contents(tmp_path: Path) -> None:
    (tmp_path / "keys").write_bytes(b"\xffsecret-bytes\n")
    message = config_error(write_config(tmp_path, two_partners(tenants="  t:\n    api_key_file: keys\n")),
                           home=tmp_path)
    assert "tenants.t" in message and "api_key_file" in message
    assert "secret-bytes" not in message and "0xff" not in message


def test_the_same_key_for_two_tenants_is_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("their-key\nshared-key\n")
    tenants = (
        f"  alpha:\n    api_key_sha256: [{sha256_hex('alpha-key')}, {sha256_hex('shared-key')}]\n"
        "  beta:\n    api_key_file: keys\n"
    )
    message = config_error(write_config(tmp_path, two_partners(tenants=tenants)), home=tmp_path)
    assert "'alpha'" in message and "'beta'" in message
    assert "give each tenant its own key" in message
    assert "shared-key" not in message and sha256_hex("shared-key")[:8] not in message


def test_one_key_given_twice_to_the_same_tenant_is_fine(tmp_path: Path) -> None:
    tenants = f"  t:\n    api_key: same-key\n    api_key_sha256: {sha256_hex('same-key')}\n"
    config = load_config(write_config(tmp_path, two_partners(tenants=tenants)))
    assert config.tenant_for_key("same-key") is config.tenants["t"]


def test_every_key_source_of_a_tenant_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FG_TEST_NEW_TENANT_KEY", "env-key")
    (tmp_path / "keys").write_text("file-key-1\nfile-key-2\n")
    tenants = (
        "  t:\n"
        "    api_key: plain-key\n"
        "    api_key_env: FG_TEST_NEW_TENANT_KEY\n"
        f"    api_key_sha256: {sha256_hex('digest-key')}\n"
        "    api_key_file: keys\n"
        "  u:\n    api_key: u-key\n"
    )
    config = load_config(write_config(tmp_path, two_partners(tenants=tenants)), home=tmp_path)
    for key in ("plain-key", "env-key", "digest-key", "file-key-1", "file-key-2"):
        assert config.tenant_for_key(key) is config.tenants["t"], key
    assert config.tenant_for_key("u-key") is config.tenants["u"]


def test_an_unset_key_variable_leaves_the_tenants_other_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FG_TEST_NEW_TENANT_KEY", raising=False)
    tenants = f"  t:\n    api_key_env: FG_TEST_NEW_TENANT_KEY\n    api_key_sha256: {sha256_hex('old-key')}\n"
    config = load_config(write_config(tmp_path, two_partners(tenants=tenants)))
    assert config.tenant_for_key("old-key") is config.tenants["t"]
    assert config.tenants["t"].key_digests == {sha256_hex("old-key")}
