"""Client role: encrypt a (FedAvg-weighted) update under the public context.

Threat model: the client holds only the public context (public key, no secret key), so
it cannot decrypt anything, including its own blob. The update is packed into full
ciphertexts, two reals per complex slot (N reals per ciphertext), straight from numpy,
and switched to the last modulus level (one prime) before it is packed on the wire.

FedAvg weights are applied by the client before encryption (pre-scaling): it costs no
level and no plaintext multiplication on the aggregator, and the CKKS error of the sum
does not depend on the weights (each client's encryption noise is absolute, ~2^-29.5 of
a unit at the aggregation preset), whereas scaling ciphertexts on the aggregator would
need a plaintext multiplication, a rescale and hence a second prime on the wire.
"""

from __future__ import annotations

import numpy as np

from secagg._errors import InvalidUpdateError
from secagg.ckks._blob import KIND_CLIENT, encode_blob
from secagg.ckks._context import PublicContext
from secagg.ckks._seal import PublicSealKeys


class CKKSClient:
    """Encryptor for clients; built from the public context bytes only."""

    def __init__(self, public_context: PublicContext | bytes) -> None:
        if isinstance(public_context, bytes | bytearray):
            public_context = PublicContext.from_bytes(bytes(public_context))
        self.context = public_context
        self.context_digest = public_context.digest
        self._keys = PublicSealKeys(public_context.params, public_context.public_key)

    def protect(self, update: np.ndarray, *, max_abs: float | None = None) -> bytes:
        """Encrypt a 1-D finite float vector into a client blob.

        ``max_abs`` bounds every |value| (default: the parameters' ``max_abs_sum``); a
        caller that knows the number of clients passes ``max_abs_sum / n`` so that the sum
        cannot wrap around modulo q.
        """
        values = np.asarray(update)
        if values.ndim != 1 or values.shape[0] == 0:
            raise InvalidUpdateError(f"update must be a non-empty 1-D vector, got {values.shape}")
        if not np.issubdtype(values.dtype, np.floating):
            raise InvalidUpdateError(f"update must be floating point, got {values.dtype}")
        if not np.all(np.isfinite(values)):
            raise InvalidUpdateError("update contains NaN or Inf")
        params = self.context.params
        bound = params.max_abs_sum if max_abs is None else max_abs
        peak = float(np.max(np.abs(values)))
        if peak > bound:
            raise InvalidUpdateError(
                f"update has |value| {peak:.3g} > {bound:.3g}, the largest that cannot "
                "overflow the ciphertext modulus in the sum"
            )
        degree = params.slots_per_ciphertext
        chunks = -(-values.shape[0] // degree)
        padded = np.zeros(chunks * degree, dtype=np.float64)
        padded[: values.shape[0]] = values
        coefficients = self._keys.encrypt(padded)
        return encode_blob(
            kind=KIND_CLIENT,
            params=params,
            context_digest=self.context_digest,
            element_count=int(values.shape[0]),
            coefficients=coefficients,
        )
