"""``secagg``: privacy-hardened secure aggregation for federated learning.

Protection schemes behind one interface (:class:`ProtectionScheme`: ``plain``, ``ckks`` in
:mod:`secagg.ckks`, ``masking`` in :mod:`secagg.masking`); the content-addressed artifact
store; the round manifest; the parties of a round (client, aggregator, key holder) and the
protocol that ties :mod:`dp` and :mod:`chain` together; and the auditor, which re-checks a
federation from the ledger and the store alone (``secagg audit`` on the command line).

Threat model: aggregator and key holder honest-but-curious and not colluding; clients may
drop out or send malformed input; see the README's "Threat model" section.
"""

from secagg._audit_report import AuditReport, Finding, RoundAudit, Verdict
from secagg._auditor import DEFAULT_EPSILON_TOLERANCE, Auditor, audit
from secagg._consortium import Consortium, Parties
from secagg._digest import Digest, keccak256
from secagg._errors import (
    BlobFormatError,
    CommitmentMismatchError,
    DuplicateClientError,
    EmptyAggregateError,
    InsecureParametersError,
    InsufficientClientsError,
    InvalidUpdateError,
    ParameterMismatchError,
    PartyKeyError,
    ProtocolAbortError,
    SecAggError,
    UnknownSchemeError,
)
from secagg._hydra import SCHEMES, build_scheme, register_configs, scheme_class
from secagg._manifest import ManifestClient, ManifestError, PrivacyPolicy, RoundManifest
from secagg._party_keys import derive_party_key, read_seed_file
from secagg._protocol import SecureRoundOutcome, SecureRoundProtocol
from secagg._recombine import recombine
from secagg._roles import AggregatorParty, ClientParty, KeyHolderParty, Submission
from secagg._safejson import UntrustedJSONError
from secagg._scheme import PhaseStats, PlainScheme, ProtectionScheme, RoundSession
from secagg._store import (
    ArtifactConflictError,
    ArtifactNotFoundError,
    ArtifactStore,
    LocalDirectoryStore,
    MemoryStore,
    UnsafeArtifactError,
)

__all__ = [
    "DEFAULT_EPSILON_TOLERANCE",
    "SCHEMES",
    "AggregatorParty",
    "ArtifactConflictError",
    "ArtifactNotFoundError",
    "ArtifactStore",
    "AuditReport",
    "Auditor",
    "BlobFormatError",
    "ClientParty",
    "CommitmentMismatchError",
    "Consortium",
    "Digest",
    "DuplicateClientError",
    "EmptyAggregateError",
    "Finding",
    "InsecureParametersError",
    "InsufficientClientsError",
    "InvalidUpdateError",
    "KeyHolderParty",
    "LocalDirectoryStore",
    "ManifestClient",
    "ManifestError",
    "MemoryStore",
    "ParameterMismatchError",
    "Parties",
    "PartyKeyError",
    "PhaseStats",
    "PlainScheme",
    "PrivacyPolicy",
    "ProtectionScheme",
    "ProtocolAbortError",
    "RoundAudit",
    "RoundManifest",
    "RoundSession",
    "SecAggError",
    "SecureRoundOutcome",
    "SecureRoundProtocol",
    "Submission",
    "UnknownSchemeError",
    "UnsafeArtifactError",
    "UntrustedJSONError",
    "Verdict",
    "audit",
    "build_scheme",
    "derive_party_key",
    "keccak256",
    "read_seed_file",
    "recombine",
    "register_configs",
    "scheme_class",
]
