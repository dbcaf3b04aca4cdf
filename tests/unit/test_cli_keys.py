"""The CLI's development key during a rotation: the key file holds several keys, the first is the one sent."""

from __future__ import annotations

from pathlib import Path

from gateway_api.cli_http import first_key


def test_the_first_non_empty_line_is_the_key_sent(tmp_path: Path) -> None:
    key_file = tmp_path / "dev-api-key"
    key_file.write_text("\n  fg-dev-new  \nfg-dev-old\n")
    assert first_key(key_file) == "fg-dev-new"
    key_file.write_text("fg-dev-only\n")
    assert first_key(key_file) == "fg-dev-only"
