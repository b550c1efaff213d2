"""Connecting: unreachable nodes, wrong chain ids, malformed keys and keystore passwords are one-line errors."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from fedlearn import chain
from fedlearn.chain.session import load_private_key
from fedlearn.errors import ChainError

KEY = "0x" + "4c" * 32


def test_unreachable_rpc(monkeypatch) -> None:
    monkeypatch.setenv("FEDLEARN_PRIVATE_KEY", KEY)
    with pytest.raises(ChainError, match=r"cannot reach JSON-RPC node at http://127.0.0.1:9: connection refused"):
        chain.connect("http://127.0.0.1:9", timeout=2)


def test_not_a_url() -> None:
    with pytest.raises(ChainError, match="backend must be 'eth-tester' or an http"):
        chain.connect("ganache")


def test_wrong_chain_id() -> None:
    with pytest.raises(ChainError, match=r"wrong chain: eth-tester has chain id \d+, expected 1$"):
        chain.connect(chain.ETH_TESTER, expected_chain_id=1)


@pytest.mark.parametrize("value", ["0x1234", "zz" * 32, ""])
def test_malformed_private_key(monkeypatch, value: str) -> None:
    monkeypatch.setenv("MY_KEY", value)
    with pytest.raises(ChainError, match=r"(private key in \$MY_KEY is malformed|no signing key: set \$MY_KEY)"):
        load_private_key(key_env="MY_KEY")


@pytest.mark.parametrize("value", ["00" * 32, "ff" * 32])
def test_a_key_outside_the_curve_is_called_that_not_malformed(monkeypatch, value: str) -> None:
    monkeypatch.setenv("MY_KEY", value)
    with pytest.raises(ChainError, match=r"private key in \$MY_KEY is not a valid secp256k1 key \(zero, or beyond"):
        load_private_key(key_env="MY_KEY")


def test_private_key_from_env(monkeypatch) -> None:
    monkeypatch.setenv("MY_KEY", KEY)
    assert load_private_key(key_env="MY_KEY").address == Account.from_key(KEY).address


def test_keystore_password(tmp_path, monkeypatch) -> None:
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(KEY, "right", iterations=2)))
    (tmp_path / "pw").write_text("right\n")
    assert load_private_key(keystore=keystore, password_file=tmp_path / "pw").address == Account.from_key(KEY).address
    monkeypatch.setenv("FEDLEARN_KEYSTORE_PASSWORD", "wrong")
    with pytest.raises(ChainError, match=f"wrong password for keystore {keystore}"):
        load_private_key(keystore=keystore)
    monkeypatch.delenv("FEDLEARN_KEYSTORE_PASSWORD")
    with pytest.raises(ChainError, match="needs its password in"):
        load_private_key(keystore=keystore)
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ChainError, match="malformed keystore"):
        load_private_key(keystore=tmp_path / "junk.json", password_file=tmp_path / "pw")


def test_eth_tester_state_survives_a_new_process(tmp_path) -> None:
    from fedlearn.chain.session import save_state

    session = chain.connect()
    deployment = chain.deploy(session)
    chain.fund(session, deployment, 77)
    save_state(session, tmp_path / "state.json")
    again = chain.connect(state_file=tmp_path / "state.json")
    assert chain.status(again, deployment).total_funded == 77


@pytest.mark.parametrize("restored", [False, True], ids=["fresh", "restored"])
def test_eth_tester_estimates_cover_the_gas_a_transaction_uses_and_surface_reverts(tmp_path, restored: bool) -> None:
    """The embedded chain estimates in one execution (see session._one_run_gas_estimate), also on a chain read
    back from its state file: a transaction sent with exactly the estimate succeeds, and one that would revert
    is refused at the estimate with its custom error."""
    from fedlearn.chain.deployment import distributor_contract, token_contract
    from fedlearn.chain.session import save_state
    from fedlearn.chain.transactions import transact

    session = chain.connect()
    deployment = chain.deploy(session)
    if restored:
        save_state(session, tmp_path / "state.json")
        session = chain.connect(state_file=tmp_path / "state.json")
    w3, me = session.w3, session.address
    token, dist = token_contract(session, deployment), distributor_contract(session, deployment)
    for fn in (token.functions.mint(me, 5 * 10**18), token.functions.approve(deployment.distributor, 5 * 10**18),
               dist.functions.fund(5 * 10**18)):
        tx = fn.build_transaction({"from": me, "gas": 0})
        estimate = w3.eth.estimate_gas({"from": me, "to": tx["to"], "data": tx["data"]})
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({**tx, "gas": estimate}))
        assert receipt["status"] == 1 and 21_000 < receipt["gasUsed"] <= estimate
    assert chain.status(session, deployment).total_funded == 5 * 10**18
    before = w3.eth.get_transaction_count(me)
    with pytest.raises(chain.ChainRevertError, match="ERC20Insufficient"):  # the allowance is spent
        transact(session, dist.functions.fund(10**18), "fund")
    assert w3.eth.get_transaction_count(me) == before  # refused at the estimate: nothing was sent
