"""Identity keys, peer ids, signatures and the key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID
from nacl.public import Box, SealedBox

from p2pinfer.crypto.identity import (
    Identity,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify,
    x25519_public_key_of,
)
from p2pinfer.crypto.signing import (
    ASSIGNMENT_DOMAIN,
    RECEIPT_DOMAIN,
    RECORD_DOMAIN,
    signed_message,
    verify_with_key,
)
from p2pinfer.errors import ConfigError, RecordError

SEED = bytes(range(32))


def test_peer_id_equals_libp2p_computation() -> None:
    for identity in [Identity.from_seed(SEED)] + [Identity.generate() for _ in range(5)]:
        libp2p_id = ID.from_pubkey(Ed25519PublicKey.from_bytes(identity.public_key))
        assert identity.peer_id == libp2p_id.to_base58()
        assert identity.peer_id.startswith("12D3KooW")
        kp = identity.libp2p_key_pair()
        assert ID.from_pubkey(kp.public_key).to_base58() == identity.peer_id
        assert kp.public_key.to_bytes() == identity.public_key


def test_from_seed_is_deterministic_and_immutable() -> None:
    a, b = Identity.from_seed(SEED), Identity.from_seed(SEED)
    assert a == b and a.peer_id == b.peer_id and hash(a) == hash(b)
    assert a != Identity.generate()
    with pytest.raises(AttributeError):
        a._peer_id = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        Identity.from_seed(b"short")


def test_public_key_roundtrip_and_bad_ids() -> None:
    identity = Identity.generate()
    assert public_key_from_peer_id(identity.peer_id) == identity.public_key
    assert peer_id_from_public_key(identity.public_key) == identity.peer_id
    rsa_style = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # sha256 multihash id
    for bad in ["", "0OIl", rsa_style, identity.peer_id[:-1], identity.peer_id + "1",
                "1" + identity.peer_id, 12345, "x" * 500]:
        with pytest.raises(RecordError) as err:
            public_key_from_peer_id(bad)  # type: ignore[arg-type]
        assert err.value.reason == "bad-peer-id"


def test_signatures_are_domain_separated() -> None:
    identity = Identity.generate()
    sig = identity.sign(RECORD_DOMAIN, b"payload")
    assert len(sig) == 64
    assert verify(identity.peer_id, RECORD_DOMAIN, b"payload", sig)
    assert not verify(identity.peer_id, ASSIGNMENT_DOMAIN, b"payload", sig)
    assert not verify(identity.peer_id, RECEIPT_DOMAIN, b"payload", sig)
    assert not verify(identity.peer_id, RECORD_DOMAIN, b"payloaD", sig)
    assert not verify(Identity.generate().peer_id, RECORD_DOMAIN, b"payload", sig)
    assert not verify("not-a-peer-id", RECORD_DOMAIN, b"payload", sig)
    assert not verify(identity.peer_id, RECORD_DOMAIN, b"payload", sig[:63])
    assert not verify_with_key(b"\x00" * 31, RECORD_DOMAIN, b"payload", sig)
    # the exact signed bytes are part of the protocol
    assert signed_message("record/v1", b"ab") == b"p2pinfer:record/v1\x00ab"
    # the tag ends at NUL, so ("record/v1", "\x00x") and ("record/v1\x00", "x") cannot collide
    for bad_domain in ["", "Record", "a\x00b", "ü", "x" * 65]:
        with pytest.raises(ValueError):
            identity.sign(bad_domain, b"p")


def test_x25519_keys_match_between_sender_and_receiver() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    sealed = SealedBox(x25519_public_key_of(bob.peer_id)).encrypt(b"assignment")
    assert SealedBox(bob.x25519_private_key()).decrypt(sealed) == b"assignment"
    box_ab = Box(alice.x25519_private_key(), x25519_public_key_of(bob.peer_id))
    box_ba = Box(bob.x25519_private_key(), x25519_public_key_of(alice.peer_id))
    assert box_ab.shared_key() == box_ba.shared_key()


def test_load_or_create_persists_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == 68
    assert Identity.load_or_create(path).peer_id == first.peer_id
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]  # no temp files left


def test_load_refuses_open_permissions(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="too open.*chmod 600"):
        Identity.load_or_create(path)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x08\x01\x12\x40" + b"\x00" * 63,
                                     b"\x08\x02\x12\x40" + b"\x00" * 64])
def test_load_refuses_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=f"{path}.*corrupt"):
        Identity.load_or_create(path)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "identity.key").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        Identity.load_or_create(tmp_path / "identity.key")


def test_load_refuses_seed_public_key_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    a, b = Identity.generate(), Identity.generate()
    path.write_bytes(a.to_key_file_bytes()[:36] + b.public_key)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="does not match"):
        Identity.load_or_create(path)


def test_key_file_is_libp2p_protobuf(tmp_path: Path) -> None:
    """The go-libp2p layout: PrivateKey{Type=Ed25519, Data=seed||pk}."""
    from libp2p.crypto.pb import crypto_pb2

    path = tmp_path / "k"
    identity = Identity.load_or_create(path)
    proto = crypto_pb2.PrivateKey.FromString(path.read_bytes())
    assert proto.key_type == crypto_pb2.KeyType.Ed25519
    assert proto.data == identity.seed + identity.public_key
