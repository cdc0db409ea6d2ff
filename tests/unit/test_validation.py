"""Input checks without a chain: addresses, numbers, names, keys in the wrong place, trusted
payload origins, the signers' key parsing, and models."""

from __future__ import annotations

import pytest

from ogpu_prefect.chain.devnet import DEV_KEYS
from ogpu_prefect.chain.errors import InvalidInputError
from ogpu_prefect.chain.signing import Signer, parse_private_key
from ogpu_prefect.models import SourceSpec
from ogpu_prefect.storage import is_trusted
from ogpu_prefect.validation import (
    REDACTED,
    SecretInWrongFieldError,
    check_address,
    check_int,
    check_name,
    check_number,
    parse_model,
    redact,
)

KEY = DEV_KEYS[1]


def test_an_address_is_checksummed_and_anything_else_is_refused_by_field() -> None:
    from eth_utils import to_checksum_address

    assert check_address("source", "0x" + "ab" * 20) == to_checksum_address("0x" + "ab" * 20)
    for bad in ["", "0x12", 12, None, "0x" + "zz" * 20, "ab" * 20]:
        with pytest.raises(InvalidInputError) as e:
            check_address("source", bad)
        assert e.value.field == "source"


def test_a_key_where_an_address_or_name_belongs_is_refused_without_echo() -> None:
    for check in (check_address, check_name):
        with pytest.raises(SecretInWrongFieldError) as e:
            check("wallet", KEY)
        assert e.value.field == "wallet" and KEY[2:] not in str(e.value) and KEY[2:] not in repr(e.value)


def test_redaction_reaches_nested_values() -> None:
    params = {"wallet": KEY, "inputs": [{"i": 0}, KEY.upper().replace("0X", "")], "n": 1}
    assert redact(params) == {"wallet": REDACTED, "inputs": [{"i": 0}, REDACTED], "n": 1}


def test_numbers_are_exact_and_bounded() -> None:
    assert check_int("payment", 5, minimum=0) == 5
    for bad in [1.0, True, "5", -1, None]:
        with pytest.raises(InvalidInputError, match="payment"):
            check_int("payment", bad, minimum=0)
    assert check_number("poll_interval", 0.5, exclusive_minimum=0) == 0.5
    for bad in [0, -1, float("nan"), float("inf"), "1"]:
        with pytest.raises(InvalidInputError, match="poll_interval"):
            check_number("poll_interval", bad, exclusive_minimum=0)


def test_only_an_exact_32_byte_key_signs() -> None:
    assert Signer(KEY).address == Signer(KEY[2:]).address
    for bad in [KEY[:-1], KEY + "0", "0x" + "00" * 32, "0x" + "ff" * 32, 123, KEY[2:-1]]:
        with pytest.raises(ValueError) as e:
            parse_private_key(bad)
        assert KEY[4:] not in str(e.value)


def test_results_are_read_only_under_trusted_prefixes() -> None:
    allowed = ["http://127.0.0.1:8000/", "https://cipfs.ogpuscan.io/ipfs/"]
    assert is_trusted("http://127.0.0.1:8000/abc.json", allowed)
    assert is_trusted("https://cipfs.ogpuscan.io/ipfs/Qm1", allowed)
    for url in [
        "http://127.0.0.1:8001/abc.json",
        "http://localhost:8000/x",
        "https://cipfs.ogpuscan.io/other",
        "http://127.0.0.1:8000@10.0.0.1/x",
        "file:///etc/passwd",
        "gopher://127.0.0.1:8000/",
        "https://cipfs.ogpuscan.io.evil.com/ipfs/Qm1",
        "http://[::1]:8000/",
    ]:
        assert not is_trusted(url, allowed), url


def test_models_give_typed_errors_naming_the_field() -> None:
    with pytest.raises(InvalidInputError) as e:
        parse_model(SourceSpec, {"name": "x", "min_payment": 1, "delivery_method": "bogus"}, "spec")
    assert e.value.field == "spec.delivery_method"
    with pytest.raises(InvalidInputError) as e:
        parse_model(SourceSpec, {"name": "x", "min_payment": -1}, "spec")
    assert e.value.field == "spec.min_payment"


def near_forms(key: str) -> list[str]:
    """A key as people paste it: quoted, a .env line, `0X`, a trailing comma, upper case, no 0x,
    inside a sentence."""
    bare = key[2:]
    return [
        f'"{key}"',
        f"'{key}'",
        f"PRIVATE_KEY={key}",
        "0X" + bare,
        key + ",",
        key.upper(),
        bare,
        bare.upper(),
        f"my key is {bare}, keep it",
        f"{key}\n",
    ]


@pytest.mark.parametrize("form", range(10))
def test_a_key_in_any_form_is_refused_redacted_and_never_echoed(form: int) -> None:
    value = near_forms(KEY)[form]
    for check in (check_address, check_name):
        with pytest.raises(SecretInWrongFieldError) as e:
            check("wallet", value)
        assert KEY[2:].lower() not in (str(e.value) + repr(e.value)).lower()
    assert redact({"wallet": value, "inputs": [value]}) == {"wallet": REDACTED, "inputs": [REDACTED]}


def test_errors_mask_the_keys_in_use_but_keep_transaction_hashes() -> None:
    from ogpu_prefect.chain.errors import TxError
    from ogpu_prefect.chain.signing import mask_keys

    Signer(KEY)  # parsed: a key in use in this process
    tx_hash = "0x" + "5a" * 32
    for form in near_forms(KEY):
        text = f"sent {tx_hash} with {form}"
        assert KEY[2:].lower() not in str(TxError(text)).lower()
        assert tx_hash in mask_keys(text)
        assert KEY[2:].lower() not in mask_keys(text).lower()
        assert KEY[2:].lower() not in str(InvalidInputError("x", text)).lower()


def test_published_tasks_carry_hashes_but_not_a_key_in_use() -> None:
    """A PublishedTask given as a dict (a deployment's parameters) holds a tx hash and a
    content-addressed URL, both 64-hex: only a key this process uses is refused there."""
    from ogpu_prefect.models import PublishedTask
    from ogpu_prefect.validation import parse_models

    task = {
        "index": 0,
        "address": "0x" + "ab" * 20,
        "source": "0x" + "cd" * 20,
        "payment": 1,
        "expiry_time": 2,
        "config_url": "file:///payloads/" + "5e" * 32 + ".json",
        "tx_hash": "0x" + "7f" * 32,
    }
    assert parse_models(PublishedTask, [task], "published", hashes=True)[0].tx_hash == task["tx_hash"]
    Signer(KEY)
    with pytest.raises(SecretInWrongFieldError) as e:
        parse_models(PublishedTask, [task, {**task, "tx_hash": KEY.upper()}], "published", hashes=True)
    assert e.value.field == "published[1]"
