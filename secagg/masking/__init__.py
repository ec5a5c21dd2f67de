"""Pairwise-masking secure aggregation (Bonawitz et al. 2017; SecAgg+, Bell et al. 2020).

No key holder: each client masks its quantized update with a self mask and with pairwise
masks agreed with its neighbours; masks cancel in the sum, and Shamir shares of each
client's secrets let the server recover from dropouts. The server, honest-but-curious and
colluding with fewer than ``t`` of any client's neighbours, learns only the sum.

Layout: ``_client.py`` / ``_server.py`` (one method per stage), ``_messages.py`` (typed
wire messages), ``_constants.py``, ``_params.py`` (public parameters and the round plan),
small crypto modules ``_shamir.py``, ``_prg.py``, ``_keys.py``, ``_aead.py``,
``_signatures.py`` (ledger-account and round signatures), ``_ciphers.py`` (the only module
that builds pycryptodome ciphers), ``_quantize.py``, ``_graph.py``, and
``_session.py`` (the runner's interface).
"""

from secagg.masking._client import MaskingClient
from secagg.masking._constants import MessageKind, Stage
from secagg.masking._errors import (
    BelowThresholdError,
    ConsistencyCheckError,
    FalseAccusationError,
    KeyAuthenticationError,
    MaskedInputError,
    MaskingParameterError,
    MessageFormatError,
    RebuttalError,
    SecretExposureError,
    ShareAuthenticationError,
    ShareReconstructionError,
    StageError,
    UnknownClientError,
    WeakGraphError,
    WrapAroundError,
)
from secagg.masking._messages import (
    AdvertiseKeys,
    Aggregate,
    ConsistencyProof,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    Header,
    KeysBroadcast,
    MaskedInput,
    PeerKeys,
    Rebuttal,
    RebuttalRequest,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.masking._params import MaskingParams, MaskingSchema, RoundPlan, plan_round
from secagg.masking._server import CombineResult, MaskingServer
from secagg.masking._session import (
    MaskingScheme,
    MaskingSession,
    build_masking_scheme,
    ledger_registry,
)

__all__ = [
    "AdvertiseKeys",
    "Aggregate",
    "BelowThresholdError",
    "CombineResult",
    "ConsistencyCheckError",
    "ConsistencyProof",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShares",
    "FalseAccusationError",
    "Header",
    "KeyAuthenticationError",
    "KeysBroadcast",
    "MaskedInput",
    "MaskedInputError",
    "MaskingClient",
    "MaskingParameterError",
    "MaskingParams",
    "MaskingSchema",
    "MaskingScheme",
    "MaskingServer",
    "MaskingSession",
    "MessageFormatError",
    "MessageKind",
    "PeerKeys",
    "Rebuttal",
    "RebuttalError",
    "RebuttalRequest",
    "RoundPlan",
    "SecretExposureError",
    "ShareAuthenticationError",
    "ShareKeys",
    "ShareReconstructionError",
    "SharesDelivery",
    "Stage",
    "StageError",
    "UnknownClientError",
    "UnmaskRequest",
    "UnmaskResponse",
    "WeakGraphError",
    "WrapAroundError",
    "build_masking_scheme",
    "ledger_registry",
    "plan_round",
]
