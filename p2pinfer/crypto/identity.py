"""A node's persistent Ed25519 identity and its libp2p peer id.

The peer id is computed here (not borrowed from libp2p) because every record check depends on
it: `base58(multihash_identity(protobuf PublicKey{Type=Ed25519, Data=pk}))`, i.e. the 40 bytes
`00 24 08 01 12 20 || pk`. The id embeds the public key, so any signature can be checked against
a peer id alone, whoever delivered the signed object.

On disk the key is the libp2p protobuf PrivateKey (Type=Ed25519, Data=seed||pk; 68 bytes, the
format go-libp2p and kubo use), in a file of mode 0600 created atomically.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import base58
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519, crypto_sign_ed25519_sk_to_curve25519
from nacl.public import PrivateKey as X25519PrivateKey
from nacl.public import PublicKey as X25519PublicKey
from nacl.signing import SigningKey

from p2pinfer.crypto.signing import PUBLIC_KEY_BYTES, sign_with, verify_with_key
from p2pinfer.errors import ConfigError, RecordError

if TYPE_CHECKING:
    from libp2p.crypto.keys import KeyPair

# protobuf PublicKey{Type=Ed25519 (1), Data=<32 bytes>} and the identity multihash around it
_PB_PUBKEY_PREFIX = b"\x08\x01\x12\x20"
_PEER_ID_PREFIX = b"\x00\x24" + _PB_PUBKEY_PREFIX
_PEER_ID_BYTES = len(_PEER_ID_PREFIX) + PUBLIC_KEY_BYTES
# protobuf PrivateKey{Type=Ed25519 (1), Data=<seed(32) || pk(32)>}
_PB_PRIVKEY_PREFIX = b"\x08\x01\x12\x40"
_KEY_FILE_BYTES = len(_PB_PRIVKEY_PREFIX) + 64
MAX_PEER_ID_CHARS = 128


def peer_id_from_public_key(public_key: bytes) -> str:
    """The base58 libp2p peer id of a 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return base58.b58encode(_PEER_ID_PREFIX + public_key).decode("ascii")


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key embedded in `peer_id`; RecordError("bad-peer-id") otherwise.

    Only the one canonical spelling is accepted (re-encoding must give the same string), so two
    different strings never name the same key.
    """
    if not isinstance(peer_id, str) or not 0 < len(peer_id) <= MAX_PEER_ID_CHARS:
        raise RecordError("bad-peer-id", f"peer id must be a non-empty string: {peer_id!r:.80}")
    try:
        raw = base58.b58decode(peer_id.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise RecordError("bad-peer-id", f"peer id {peer_id!r:.80} is not base58") from exc
    if len(raw) != _PEER_ID_BYTES or not raw.startswith(_PEER_ID_PREFIX):
        raise RecordError(
            "bad-peer-id", f"peer id {peer_id!r:.80} does not embed an Ed25519 public key"
        )
    if base58.b58encode(raw).decode("ascii") != peer_id:
        raise RecordError("bad-peer-id", f"peer id {peer_id!r:.80} is not canonical base58")
    return raw[len(_PEER_ID_PREFIX) :]


def verify(peer_id: str, domain: str, payload: bytes, signature: bytes) -> bool:
    """True iff `signature` over (`domain`, `payload`) was made by the key inside `peer_id`."""
    try:
        public_key = public_key_from_peer_id(peer_id)
    except RecordError:
        return False
    return verify_with_key(public_key, domain, payload, signature)


def x25519_public_key_of(peer_id: str) -> X25519PublicKey:
    """The X25519 key derived from the Ed25519 key in `peer_id` (for SealedBox to that peer)."""
    return X25519PublicKey(crypto_sign_ed25519_pk_to_curve25519(public_key_from_peer_id(peer_id)))


class Identity:
    """An Ed25519 key pair; immutable. Build with generate / from_seed / load_or_create."""

    __slots__ = ("_key", "_peer_id")

    def __init__(self, signing_key: SigningKey) -> None:
        self._key = signing_key
        self._peer_id = peer_id_from_public_key(bytes(signing_key.verify_key))

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_peer_id"):
            raise AttributeError("Identity is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"Identity({self._peer_id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._peer_id == self._peer_id

    def __hash__(self) -> int:
        return hash(self._peer_id)

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed32: bytes) -> Identity:
        if not isinstance(seed32, bytes) or len(seed32) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed32))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the key at `path`, or create it (mode 0600, atomically) if it does not exist."""
        path = Path(path)
        if not path.exists():
            _create_key_file(path, cls.generate())
        return _load_key_file(path)

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, domain: str, payload: bytes) -> bytes:
        """Detached signature over the domain-separated payload (see crypto.signing)."""
        return sign_with(self._key, domain, payload)

    def libp2p_key_pair(self) -> KeyPair:
        """The same key as a libp2p KeyPair, for `new_host(key_pair=...)`."""
        from libp2p.crypto.ed25519 import create_new_key_pair

        return create_new_key_pair(self.seed)

    def x25519_private_key(self) -> X25519PrivateKey:
        """X25519 private key derived from this Ed25519 key (opens SealedBoxes sent to us)."""
        sk64 = self.seed + self.public_key
        return X25519PrivateKey(crypto_sign_ed25519_sk_to_curve25519(sk64))

    def to_key_file_bytes(self) -> bytes:
        """The libp2p protobuf PrivateKey encoding written to the key file."""
        return _PB_PRIVKEY_PREFIX + self.seed + self.public_key


def _create_key_file(path: Path, identity: Identity) -> None:
    """Write the key to a private temp file, then link it into place (never overwrites)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(identity.to_key_file_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and fails if another process won the race
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _load_key_file(path: Path) -> Identity:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"identity key {path}: not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"identity key {path}: permissions {stat.filemode(st.st_mode)} are too open; "
                f"the key must be private to its owner (chmod 600 {path})"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"identity key {path}: cannot read: {exc.strerror}") from exc
    if len(data) != _KEY_FILE_BYTES or not data.startswith(_PB_PRIVKEY_PREFIX):
        raise ConfigError(
            f"identity key {path}: corrupt (want a {_KEY_FILE_BYTES}-byte libp2p Ed25519 "
            f"private key, got {len(data)} bytes); move it away to create a new identity"
        )
    seed, public = data[4:36], data[36:]
    identity = Identity.from_seed(seed)
    if identity.public_key != public:
        raise ConfigError(f"identity key {path}: corrupt (public key does not match the seed)")
    return identity
