"""The lease fence (lease.py `await_predecessor`) against a real anvil: a dead holder's
transactions that the node's pool holds *queued* (behind a gap, or anvil's stuck queue) are not
shown by the "pending" nonce count. Taken as dropped, they were mined later, once the next run's
own transactions filled the gap: what they published was published again (the reliability
bench's "killed mid-publish" scenario saw 4 duplicates that way). They are removed now."""

from __future__ import annotations

from ogpu_prefect.chain.connection import Chain
from ogpu_prefect.chain.pool import queued_of
from ogpu_prefect.chain.signing import Signer
from ogpu_prefect.lease import BatchLease


def test_a_dead_holders_queued_transactions_are_removed_before_the_batch_is_read(devnet) -> None:
    chain = Chain(devnet.network)
    signer = Signer(devnet.key("client"))
    address = signer.address
    rpc = chain.rpc
    nonce = int(rpc.call("eth_getTransactionCount", [address, "latest"]), 16)
    fees = {"maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9}
    tx = {"chainId": devnet.network.chain_id, "gas": 21000, "to": address, "value": 0, "data": b"", "type": 2}
    # The dead holder's: its transaction at `nonce` never arrived, the next one waits queued.
    raw, _ = signer.sign({**tx, **fees, "nonce": nonce + 1})
    rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
    assert queued_of(rpc, address) == 1
    assert int(rpc.call("eth_getTransactionCount", [address, "pending"]), 16) == nonce, "invisible to pending"

    lease = BatchLease("ogpu-batch-t", "t", None, wait_s=0)
    lease.inherited, lease._holder_dead = (address, nonce + 1), True
    lease.await_predecessor(rpc)
    assert queued_of(rpc, address) == 0

    # This run's own transaction fills the gap: the dead holder's can no longer follow it.
    raw, _ = signer.sign({**tx, **fees, "nonce": nonce})
    rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
    rpc.call("evm_mine")
    rpc.call("evm_mine")
    assert int(rpc.call("eth_getTransactionCount", [address, "latest"]), 16) == nonce + 1
