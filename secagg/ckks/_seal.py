"""The only module that imports TenSEAL (``tenseal.sealapi``, i.e. Microsoft SEAL).

It turns :class:`~secagg.ckks._params.CKKSParams` into a SEAL context, generates keys,
encrypts packed float vectors under a *public* key and decrypts under the secret key.
Ciphertexts cross this boundary only as numpy arrays of RNS coefficients at the last
level (one prime), shape ``(chunks, 2, N)``; everything else (wire format, additions)
is pure numpy elsewhere.

Threat model: :class:`PublicSealKeys` holds the public key only (no relinearization or
Galois keys: only additions happen), so a party holding it cannot decrypt. The secret key
lives only inside :class:`SecretSealKeys`, in memory; it is never serialized or written to
disk. SEAL's ``save``/``load`` take file paths, so public keys and ciphertexts pass through
a private temporary directory (``/dev/shm`` when present) that is removed afterwards.
:class:`CommitteeRing` serves committee decryption: public polynomials take the same
path; a committee member's secret polynomials (key share, smudging noise) only pass
through an anonymous in-memory file (Linux ``memfd_create``), or else through a numpy NTT.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import tenseal.sealapi as seal
import zstandard

from secagg._errors import ParameterMismatchError
from secagg.ckks._params import CKKSParams
from secagg.ckks._zq import NegacyclicNTT

_SEAL_MAGIC = 0xA15E
_SEAL_MAJOR = 4
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr, rsvd, size
_PARMS_ID_SIZE = 32
# Ciphertext members after parms_id: is_ntt_form, size, N, coeff modulus count, scale,
# correction factor; then the coefficient DynArray (its own header, count, data).
_MEMBERS = struct.Struct("<BQQQdQ")
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
_MAX_SEAL_OBJECT = 1 << 28
_ZSTD = zstandard.ZstdDecompressor()


def _scratch_base() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


@contextmanager
def _scratch_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="secagg-ckks-", dir=_scratch_base()) as folder:
        yield os.path.join(folder, "obj.bin")


@contextmanager
def _memory_file() -> Iterator[str | None]:
    """A path to an anonymous in-memory file (Linux ``memfd_create``), or None if none.

    The file has no name in any filesystem, never reaches a disk, is visible only to this
    process (``/proc/self/fd``) and is freed when closed: secrets may pass through it.
    """
    create = getattr(os, "memfd_create", None)
    if create is None:
        yield None
        return
    try:
        descriptor = create("secagg-ckks-secret", os.MFD_CLOEXEC)
    except OSError:
        yield None
        return
    path = f"/proc/self/fd/{descriptor}"
    try:
        yield path if os.path.exists(path) else None
    finally:
        os.close(descriptor)


class _Ring:
    """A SEAL context for one parameter set, and the last (wire) level's parms id."""

    def __init__(self, params: CKKSParams) -> None:
        self.params = params
        encryption_params = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        encryption_params.set_poly_modulus_degree(params.poly_modulus_degree)
        encryption_params.set_coeff_modulus(
            seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
        )
        self.context = seal.SEALContext(encryption_params, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self.context.parameters_set():
            raise ParameterMismatchError(
                f"SEAL refused the parameters: {self.context.parameters_error_message()}"
            )
        self.wire_parms_id = self.context.last_parms_id()
        self.wire_prime = int(self.context.last_context_data().parms().coeff_modulus()[0].value())
        self.encoder = seal.CKKSEncoder(self.context)
        self.version = self._seal_version()
        # Ciphertexts (never keys) are loaded through this private folder; removed on GC.
        scratch = tempfile.mkdtemp(prefix="secagg-ckks-", dir=_scratch_base())
        weakref.finalize(self, shutil.rmtree, scratch, ignore_errors=True)
        self._ciphertext_path = os.path.join(scratch, "ciphertext.bin")

    def _seal_version(self) -> tuple[int, int]:
        probe = seal.Plaintext()
        with _scratch_path() as path:
            probe.save(path)
            with open(path, "rb") as handle:
                header = handle.read(_SEAL_HEADER.size)
        _, _, major, minor, _, _, _ = _SEAL_HEADER.unpack(header)
        if major != _SEAL_MAJOR:
            raise ParameterMismatchError(
                f"SEAL {major}.{minor} is not supported: the ciphertext layout written by "
                f"ciphertext_from_coefficients is SEAL {_SEAL_MAJOR}.x's"
            )
        return major, minor

    def ciphertext_from_coefficients(self, coefficients: np.ndarray) -> seal.Ciphertext:
        """Rebuild a SEAL ciphertext (NTT form, last level) from a ``(2, N)`` array."""
        degree = self.params.poly_modulus_degree
        payload = np.ascontiguousarray(coefficients, dtype="<u8").tobytes()
        array_body = struct.pack("<Q", 2 * degree) + payload
        array_bytes = self._header(len(array_body)) + array_body
        members = (
            struct.pack("<4Q", *self.wire_parms_id)
            + _MEMBERS.pack(1, 2, degree, 1, self.params.scale, 1)
            + array_bytes
        )
        ciphertext = seal.Ciphertext()
        with open(self._ciphertext_path, "wb") as handle:
            handle.write(self._header(len(members)) + members)
        ciphertext.load(self.context, self._ciphertext_path)
        return ciphertext

    def coefficients(self, ciphertext: seal.Ciphertext) -> np.ndarray:
        """The ``(2, N)`` coefficients of a last-level ciphertext, via SEAL's own ``save``.

        Reading SEAL's serialization (decompressed) is ~4x faster than one Python call per
        coefficient; the layout is checked field by field against what we expect.
        """
        degree = self.params.poly_modulus_degree
        ciphertext.save(self._ciphertext_path)
        with open(self._ciphertext_path, "rb") as handle:
            raw = handle.read()
        magic, _, _, _, mode, _, size = _SEAL_HEADER.unpack_from(raw)
        if magic != _SEAL_MAGIC or size != len(raw):
            raise ParameterMismatchError("SEAL wrote an unexpected ciphertext header")
        body = _decompress(mode, raw[_SEAL_HEADER.size :])
        parms_id = list(struct.unpack_from("<4Q", body))
        fields = struct.unpack_from("<BQQQ", body, _PARMS_ID_SIZE)
        count_offset = _PARMS_ID_SIZE + _MEMBERS.size + _SEAL_HEADER.size
        (count,) = struct.unpack_from("<Q", body, count_offset)
        if (
            parms_id != list(self.wire_parms_id)
            or fields != (1, 2, degree, 1)
            or (count != 2 * degree)
        ):
            raise ParameterMismatchError("ciphertext is not a size-2 NTT-form last-level one")
        return np.frombuffer(body, dtype="<u8", count=2 * degree, offset=count_offset + 8).reshape(
            2, degree
        )

    def _header(self, body_size: int) -> bytes:
        major, minor = self.version
        return _SEAL_HEADER.pack(
            _SEAL_MAGIC, _SEAL_HEADER.size, major, minor, 0, 0, _SEAL_HEADER.size + body_size
        )


def _decompress(mode: int, body: bytes) -> bytes:
    if mode == _COMPR_NONE:
        return body
    if mode == _COMPR_ZLIB:
        return zlib.decompress(body)
    if mode == _COMPR_ZSTD:
        return _ZSTD.decompress(body, max_output_size=_MAX_SEAL_OBJECT)
    raise ParameterMismatchError(f"unknown SEAL compression mode {mode}")


class PublicSealKeys:
    """Encrypt-only: a SEAL context and a public key. Cannot decrypt."""

    def __init__(self, params: CKKSParams, public_key_bytes: bytes) -> None:
        self._ring = _Ring(params)
        public_key = seal.PublicKey()
        try:
            with _scratch_path() as path:
                with open(path, "wb") as handle:
                    handle.write(public_key_bytes)
                public_key.load(self._ring.context, path)
        except (RuntimeError, ValueError) as error:
            raise ParameterMismatchError(
                f"public key does not load under these parameters: {error}"
            ) from error
        self._encryptor = seal.Encryptor(self._ring.context, public_key)

    @property
    def wire_prime(self) -> int:
        return self._ring.wire_prime

    def encrypt(self, values: np.ndarray) -> np.ndarray:
        """Encrypt float64 ``values`` (length a multiple of N) two reals per complex slot.

        Returns the last-level RNS coefficients, shape ``(len(values) // N, 2, N)``.
        """
        ring = self._ring
        degree = ring.params.poly_modulus_degree
        chunks = values.reshape(-1, degree)
        out = np.empty((chunks.shape[0], 2, degree), dtype=np.uint64)
        plaintext = seal.Plaintext()
        ciphertext = seal.Ciphertext()
        for index, chunk in enumerate(chunks):
            packed = (chunk[0::2] + 1j * chunk[1::2]).tolist()
            ring.encoder.encode(packed, ring.wire_parms_id, ring.params.scale, plaintext)
            self._encryptor.encrypt(plaintext, ciphertext)
            out[index] = ring.coefficients(ciphertext)
        return out


class SecretSealKeys:
    """The key holder's SEAL material: context, secret key, decryptor. Never serialized."""

    def __init__(self, params: CKKSParams) -> None:
        self._ring = _Ring(params)
        generator = seal.KeyGenerator(self._ring.context)
        public_key = seal.PublicKey()
        generator.create_public_key(public_key)
        with _scratch_path() as path:
            public_key.save(path)
            with open(path, "rb") as handle:
                self.public_key_bytes = handle.read()
        self._secret_key = generator.secret_key()
        self._decryptor = seal.Decryptor(self._ring.context, self._secret_key)

    def export_secret(self) -> bytes:
        """The secret key in SEAL's serialization, for a key holder that must keep it on its
        own node across processes (deploy/: Flower 1.42 runs each message in a new process).
        Passes only through an anonymous in-memory file; never call it to send the key."""
        with _memory_file() as path:
            if path is None:
                raise ParameterMismatchError(
                    "no anonymous in-memory file to export a secret through"
                )
            self._secret_key.save(path)
            with open(path, "rb") as handle:
                return handle.read()

    @classmethod
    def restore(
        cls, params: CKKSParams, *, secret: bytes, public_key_bytes: bytes
    ) -> SecretSealKeys:
        """The keys :meth:`export_secret` saved (and the matching public key's bytes)."""
        keys = cls.__new__(cls)
        keys._ring = _Ring(params)
        keys.public_key_bytes = public_key_bytes
        secret_key = seal.SecretKey()
        with _memory_file() as path:
            if path is None:
                raise ParameterMismatchError("no anonymous in-memory file to load a secret through")
            with open(path, "wb") as handle:
                handle.write(secret)
            try:
                secret_key.load(keys._ring.context, path)
            except (RuntimeError, ValueError) as error:
                raise ParameterMismatchError(
                    f"secret key does not load under these parameters: {error}"
                ) from None
        keys._secret_key = secret_key
        keys._decryptor = seal.Decryptor(keys._ring.context, secret_key)
        return keys

    @property
    def wire_prime(self) -> int:
        return self._ring.wire_prime

    def decrypt(self, coefficients: np.ndarray) -> np.ndarray:
        """Decrypt ``(chunks, 2, N)`` last-level coefficients to ``chunks * N`` float64."""
        ring = self._ring
        degree = ring.params.poly_modulus_degree
        out = np.empty((coefficients.shape[0], degree), dtype=np.float64)
        plaintext = seal.Plaintext()
        for index, pair in enumerate(coefficients):
            ciphertext = ring.ciphertext_from_coefficients(pair)
            self._decryptor.decrypt(ciphertext, plaintext)
            slots = np.asarray(ring.encoder.decode_complex(plaintext), dtype=np.complex128)
            out[index, 0::2] = slots.real
            out[index, 1::2] = slots.imag
        return out.reshape(-1)


#: SEAL ciphertexts hold at most 16 polynomials; batching them cuts per-call overhead.
_MAX_POLYS_PER_CIPHERTEXT = 16
_PLAIN_MEMBERS = struct.Struct("<4QQd")  # parms_id, coefficient count, scale
#: secagg.ckks._zq.mulmod is exact for primes below 2^55.
_MAX_COMMITTEE_BITS = 55


class CommitteeRing:
    """SEAL's ring operations for committee decryption; holds no key of any kind.

    Committee members, the combiner and the auditor need SEAL's own ring operations on
    polynomials: the forward and inverse negacyclic NTT at the wire level, assembling a
    SEAL public key from two NTT-form polynomials, and decoding an NTT-form plaintext.
    Public polynomials (partials, key shares, releases) pass through the private scratch
    file; secret ones (key shares, smudging noise) only through :meth:`secret_to_ntt`,
    which uses an anonymous in-memory file and, where the OS has none, the numpy NTT
    :class:`secagg.ckks._zq.NegacyclicNTT` (same result, slower). Polynomials pass as
    ``(count, N)`` uint64 arrays of coefficients in ``[0, q)``. Only single-prime
    parameter sets are supported (the aggregation preset): there the key level is the wire
    level, so key shares, ciphertexts and partial decryptions share one NTT domain.
    """

    def __init__(self, params: CKKSParams) -> None:
        if len(params.coeff_mod_bit_sizes) != 1 or params.wire_prime_bits > _MAX_COMMITTEE_BITS:
            raise ParameterMismatchError(
                "committee decryption needs a single prime of at most "
                f"{_MAX_COMMITTEE_BITS} bits (the aggregation preset), got "
                f"coeff_mod_bit_sizes={params.coeff_mod_bit_sizes}"
            )
        self._ring = _Ring(params)
        if self._ring.context.key_parms_id() != self._ring.wire_parms_id:
            raise ParameterMismatchError("the key level is not the wire level")  # pragma: no cover
        self._evaluator = seal.Evaluator(self._ring.context)
        self._numpy_ntt: NegacyclicNTT | None = None

    @property
    def wire_prime(self) -> int:
        return self._ring.wire_prime

    def secret_to_ntt(self, polys: np.ndarray) -> np.ndarray:
        """Forward NTT of secret polynomials: never through a named file, never on disk."""
        with _memory_file() as path:
            if path is not None:
                return self._transform(polys, forward=True, path=path)
        return self.numpy_ntt().forward(np.ascontiguousarray(polys, dtype=np.uint64))

    def numpy_ntt(self) -> NegacyclicNTT:
        """The in-memory numpy NTT, in SEAL's order (built on first use)."""
        if self._numpy_ntt is None:
            self._numpy_ntt = NegacyclicNTT(q=self.wire_prime, points=self.ntt_points())
        return self._numpy_ntt

    def to_ntt(self, polys: np.ndarray) -> np.ndarray:
        """SEAL's forward NTT of each row of ``polys`` (coefficient domain, in [0, q)).

        For public polynomials only: they pass through the scratch file.
        """
        return self._transform(polys, forward=True, path=self._ring._ciphertext_path)

    def ntt_points(self) -> np.ndarray:
        """The roots of X^N + 1 at which SEAL's NTT evaluates each slot (the NTT of X)."""
        monomial = np.zeros((1, self._ring.params.poly_modulus_degree), dtype=np.uint64)
        monomial[0, 1] = 1
        return self.to_ntt(monomial)[0]

    def from_ntt(self, polys: np.ndarray) -> np.ndarray:
        """SEAL's inverse NTT of each row of ``polys`` (NTT domain, in [0, q)); public only."""
        return self._transform(polys, forward=False, path=self._ring._ciphertext_path)

    def _transform(self, polys: np.ndarray, *, forward: bool, path: str) -> np.ndarray:
        rows = np.ascontiguousarray(polys, dtype=np.uint64)
        out = np.empty_like(rows)
        for start in range(0, rows.shape[0], _MAX_POLYS_PER_CIPHERTEXT):
            batch = rows[start : start + _MAX_POLYS_PER_CIPHERTEXT]
            if batch.shape[0] == 1:  # SEAL ciphertexts have at least two polynomials
                batch = np.concatenate([batch, batch])
            ciphertext = self._load_polys(batch, ntt_form=not forward, path=path)
            if forward:
                self._evaluator.transform_to_ntt_inplace(ciphertext)
            else:
                self._evaluator.transform_from_ntt_inplace(ciphertext)
            stop = min(start + _MAX_POLYS_PER_CIPHERTEXT, rows.shape[0])
            out[start:stop] = self._saved_polys(ciphertext, batch.shape[0], path=path)[
                : stop - start
            ]
        return out

    def _load_polys(self, polys: np.ndarray, *, ntt_form: bool, path: str) -> seal.Ciphertext:
        ring = self._ring
        count, degree = polys.shape
        array_body = struct.pack("<Q", count * degree) + polys.astype("<u8").tobytes()
        members = (
            struct.pack("<4Q", *ring.wire_parms_id)
            + _MEMBERS.pack(int(ntt_form), count, degree, 1, 1.0, 1)
            + ring._header(len(array_body))
            + array_body
        )
        return self._load(seal.Ciphertext(), ring._header(len(members)) + members, path)

    def _load(self, target: seal.Ciphertext, data: bytes, path: str) -> seal.Ciphertext:
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            target.load(self._ring.context, path)
        except (RuntimeError, ValueError) as error:
            raise ParameterMismatchError(f"SEAL refused a polynomial batch: {error}") from error
        return target

    def _saved_polys(self, ciphertext: seal.Ciphertext, count: int, *, path: str) -> np.ndarray:
        degree = self._ring.params.poly_modulus_degree
        ciphertext.save(path)
        with open(path, "rb") as handle:
            raw = handle.read()
        magic, _, _, _, mode, _, size = _SEAL_HEADER.unpack_from(raw)
        if magic != _SEAL_MAGIC or size != len(raw):
            raise ParameterMismatchError("SEAL wrote an unexpected ciphertext header")
        body = _decompress(mode, raw[_SEAL_HEADER.size :])
        count_offset = _PARMS_ID_SIZE + _MEMBERS.size + _SEAL_HEADER.size
        (stored,) = struct.unpack_from("<Q", body, count_offset)
        if stored != count * degree:
            raise ParameterMismatchError("SEAL wrote an unexpected polynomial count")
        return np.frombuffer(
            body, dtype="<u8", count=count * degree, offset=count_offset + 8
        ).reshape(count, degree)

    def public_key_bytes(self, p0: np.ndarray, p1: np.ndarray) -> bytes:
        """Serialize ``(p0, p1)`` (NTT form) as a SEAL public key, uncompressed, canonical.

        The layout is SEAL's own (a size-2 NTT-form ciphertext at the key level, scale 1);
        the bytes are loaded back into a ``seal.PublicKey`` before they are returned, so
        anything SEAL would refuse is refused here.
        """
        ring = self._ring
        degree = ring.params.poly_modulus_degree
        polys = np.stack([p0, p1]).astype("<u8")
        array_body = struct.pack("<Q", 2 * degree) + polys.tobytes()
        members = (
            struct.pack("<4Q", *ring.wire_parms_id)
            + _MEMBERS.pack(1, 2, degree, 1, 1.0, 1)
            + ring._header(len(array_body))
            + array_body
        )
        data = ring._header(len(members)) + members
        with _scratch_path() as path:
            with open(path, "wb") as handle:
                handle.write(data)
            try:
                seal.PublicKey().load(ring.context, path)
            except (RuntimeError, ValueError) as error:
                raise ParameterMismatchError(f"SEAL refused the public key: {error}") from error
        return data

    def decode(self, ntt_polys: np.ndarray) -> np.ndarray:
        """Decode ``(chunks, N)`` NTT-form plaintexts at the wire scale to ``chunks * N`` reals."""
        ring = self._ring
        degree = ring.params.poly_modulus_degree
        out = np.empty((ntt_polys.shape[0], degree), dtype=np.float64)
        plaintext = seal.Plaintext()
        head = _PLAIN_MEMBERS.pack(*ring.wire_parms_id, degree, ring.params.scale)
        array_head = ring._header(8 + 8 * degree) + struct.pack("<Q", degree)
        for index, poly in enumerate(np.ascontiguousarray(ntt_polys, dtype="<u8")):
            members = head + array_head + poly.tobytes()
            with open(ring._ciphertext_path, "wb") as handle:
                handle.write(ring._header(len(members)) + members)
            plaintext.load(ring.context, ring._ciphertext_path)
            slots = np.asarray(ring.encoder.decode_complex(plaintext), dtype=np.complex128)
            out[index, 0::2] = slots.real
            out[index, 1::2] = slots.imag
        return out.reshape(-1)
