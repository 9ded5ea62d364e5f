"""The secrets file format, its encryption and the shell lines: pure functions, no files."""

from __future__ import annotations

import subprocess

import pytest
from cryptography.fernet import Fernet, InvalidToken

from blocktrain.secrets.errors import SecretsError, TamperedError, WrongKeyError
from blocktrain.secrets.names import check_name, export_lines, value_from_input
from blocktrain.secrets.vault import (
    Sealed,
    generate_key,
    key_check,
    new_key_id,
    parse_keys,
    reseal,
    seal,
    unseal,
)

VALUES = {"S3_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG", "DB_PASSWORD": 'it\'s "quoted"\n$HOME `x`'}


def test_round_trip_through_the_rendered_text() -> None:
    key = generate_key()
    text = seal(VALUES, "proj-0123", key).render()
    assert Sealed.parse(text, "f").key_id == "proj-0123"
    assert unseal(Sealed.parse(text, "f"), [key], "f", "k") == VALUES


def test_neither_names_nor_values_appear_in_the_file() -> None:
    text = seal(VALUES, "proj-0123", generate_key()).render()
    for name, value in VALUES.items():
        assert name not in text
        assert value not in text


def test_every_changed_token_character_is_detected() -> None:
    key = generate_key()
    sealed = seal({"A_TOKEN": "value-123"}, "p-1", key)
    for i in range(0, len(sealed.token), 7):
        swapped = "A" if sealed.token[i] != "A" else "B"
        token = sealed.token[:i] + swapped + sealed.token[i + 1 :]
        changed = Sealed(key_id=sealed.key_id, key_check=sealed.key_check, token=token)
        with pytest.raises(TamperedError, match="fails its authentication check"):
            unseal(changed, [key], "secrets.enc", "k")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t[:-30] + "\n", "fails its authentication check"),  # truncated token
        (lambda t: t.replace("format: blocktrain-secrets 1", "format: other 9"), "is not a"),
        (lambda t: t.replace("token:", "tokn:"), "unexpected line"),
        (lambda t: t + "token: again\n", "unexpected line"),
        (lambda t: t.replace("key-id: p-1", "key-id: ../../etc/passwd"), "invalid key-id"),
        (lambda t: "\n".join(t.splitlines()[:-1]), "no token line"),
        (lambda t: "", "is not a"),
    ],
)
def test_damaged_text_is_one_tampered_error(edit, message: str) -> None:
    key = generate_key()
    text = seal({"A_TOKEN": "value-123"}, "p-1", key).render()
    with pytest.raises(TamperedError, match=message):
        unseal(Sealed.parse(edit(text), "secrets.enc"), [key], "secrets.enc", "k")


def test_wrong_key_is_told_apart_from_tampering() -> None:
    sealed = seal(VALUES, "p-1", generate_key())
    with pytest.raises(WrongKeyError, match=r"key file k\.key does not open secrets\.enc"):
        unseal(sealed, [generate_key()], "secrets.enc", "key file k.key")


def test_reseal_keeps_every_value_and_the_old_key_no_longer_opens() -> None:
    old, new = generate_key(), generate_key()
    sealed = seal(VALUES, "p-1", old)
    rotated = reseal(sealed, new, [old])
    assert unseal(rotated, [new], "f", "k") == VALUES
    assert rotated.key_check == key_check(new) != key_check(old)
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(rotated.token)
    with pytest.raises(WrongKeyError):
        unseal(rotated, [old], "f", "k")


def test_either_key_opens_while_a_rotation_stores_both() -> None:
    old, new = generate_key(), generate_key()
    assert unseal(seal(VALUES, "p", old), [new, old], "f", "k") == VALUES
    assert unseal(seal(VALUES, "p", new), [new, old], "f", "k") == VALUES


def test_keys_text() -> None:
    a, b = generate_key(), generate_key()
    assert parse_keys(f"{a}\n{b}\n", "w") == (a, b)
    assert parse_keys(f"{a} {b}", "w") == (a, b)
    with pytest.raises(SecretsError, match="holds no key"):
        parse_keys("\n", "key file x")
    with pytest.raises(SecretsError, match="does not hold a blocktrain secrets key"):
        parse_keys("not-a-key", "key file x")


def test_key_ids_are_safe_file_names() -> None:
    key_id = new_key_id("../My Project!")
    assert key_id.startswith("My-Project-")
    assert "/" not in key_id
    assert new_key_id("...").startswith("project-")
    assert new_key_id("x") != new_key_id("x")


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "Ä", "BLOCKTRAIN_SECRET_NAMES", "A=B"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(SecretsError):
        check_name(name)


def test_input_values() -> None:
    assert value_from_input("abc\n", "X") == "abc"
    assert value_from_input("abc\r\n", "X") == "abc"
    assert value_from_input("two\nlines\n", "X") == "two\nlines"
    with pytest.raises(SecretsError, match="empty value for X"):
        value_from_input("\n", "X")
    with pytest.raises(SecretsError, match="NUL"):
        value_from_input("a\0b", "X")


def test_export_lines_survive_a_real_shell() -> None:
    script = export_lines(VALUES, listed="OTHER_NAME")
    assert script.splitlines()[-1] == (
        "export BLOCKTRAIN_SECRET_NAMES=DB_PASSWORD,OTHER_NAME,S3_SECRET_KEY"
    )
    shown = subprocess.run(
        ["bash", "-c", script + 'printf "%s\\0%s" "$S3_SECRET_KEY" "$DB_PASSWORD"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.split("\0") == [VALUES["S3_SECRET_KEY"], VALUES["DB_PASSWORD"]]


def test_no_secrets_export_nothing_new() -> None:
    assert export_lines({}) == ""
    assert export_lines({}, listed="A") == "export BLOCKTRAIN_SECRET_NAMES=A\n"
