"""Raft messages between nodes are sealed with the cluster secret (store/cipher.py).

pysyncobj unpickles what it receives, so these are the properties that keep a
node from unpickling anything a secret-less peer sent.
"""

import pytest

from django_dqcluster.store.cipher import RaftCipher


@pytest.fixture(scope="module")
def cipher():
    return RaftCipher("cluster-secret")


def test_a_sealed_message_opens_with_the_same_secret_only(cipher):
    sealed = cipher.encrypt_at_time(b"append_entries payload", 0)
    assert b"append_entries payload" not in sealed
    assert RaftCipher("cluster-secret").decrypt(sealed) == b"append_entries payload"
    with pytest.raises(Exception):
        RaftCipher("another-secret").decrypt(sealed)


@pytest.mark.parametrize("position", [0, 7, 8, 19, 20, -1], ids=["sequence", "sequence-end", "nonce",
                                                                  "nonce-end", "ciphertext", "tag"])
def test_a_message_altered_anywhere_is_rejected(cipher, position):
    sealed = bytearray(cipher.encrypt_at_time(b"payload", 0))
    sealed[position] ^= 0x01
    with pytest.raises(Exception):
        cipher.decrypt(bytes(sealed))


def test_a_truncated_message_is_rejected(cipher):
    sealed = cipher.encrypt_at_time(b"payload", 0)
    for length in (0, 8, 19, 20, len(sealed) - 1):
        with pytest.raises(Exception):
            cipher.decrypt(sealed[:length])


def test_the_sequence_pysyncobj_orders_messages_by_strictly_increases(cipher):
    # pysyncobj drops a connection whose messages' "timestamps" go backwards;
    # Fernet's were whole seconds, which let a message be replayed within one.
    stamps = [cipher.extract_timestamp(cipher.encrypt_at_time(b"m", 0)) for _ in range(100)]
    assert stamps == sorted(set(stamps))


def test_the_same_message_sealed_twice_differs(cipher):
    assert cipher.encrypt_at_time(b"same", 0) != cipher.encrypt_at_time(b"same", 0)


def test_nonces_never_repeat_within_a_node_and_differ_between_nodes():
    """GCM-SIV tolerates a repeated nonce, but nonces are still meant to be unique (one key, many nodes)."""
    def nonces(cipher, count):
        return {cipher.encrypt_at_time(b"m", 0)[8:20] for _ in range(count)}

    first, second = nonces(RaftCipher("cluster-secret"), 5000), nonces(RaftCipher("cluster-secret"), 5000)
    assert len(first) == 5000 and len(second) == 5000
    assert not first & second


def test_while_the_secret_rotates_a_node_opens_messages_sealed_with_a_fallback_but_seals_with_its_own():
    rotating = RaftCipher("new-secret", fallbacks=["old-secret"])
    old_member, new_member = RaftCipher("old-secret"), RaftCipher("new-secret")
    assert rotating.decrypt(new_member.encrypt_at_time(b"from a switched member", 0)) == b"from a switched member"
    assert rotating.fallback_used_at is None, "the secret itself is no fallback"
    assert rotating.decrypt(old_member.encrypt_at_time(b"from an old member", 0)) == b"from an old member"
    assert rotating.fallback_used_at is not None, "status says the old secret is still in use"
    assert new_member.decrypt(rotating.encrypt_at_time(b"sealed", 0)) == b"sealed"
    with pytest.raises(Exception):
        old_member.decrypt(rotating.encrypt_at_time(b"sealed", 0))
    with pytest.raises(Exception):
        rotating.decrypt(RaftCipher("a-third-secret").encrypt_at_time(b"outsider", 0))
