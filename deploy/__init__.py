"""``deploy``: hospitals, key holder and aggregator as message-driven sites, on Flower.

Each role is a site that answers typed, versioned messages (:mod:`deploy._wire`,
docs/formats.md "Deployment messages"): :class:`HospitalSite` (its own data, model,
trainer and ledger account), :class:`KeyHolderSite` (makes the CKKS key itself, sends only
the public context, releases each round once), with ``secagg.committee_size`` K > 1
instead K :class:`CommitteeSite` members (each its own key share; any T release a round,
:mod:`deploy._committee`) and the aggregator's
:class:`RoundDriver` (with ``secagg=masking`` also the masking server, each hospital
running its own masking client: :mod:`deploy._masking`). A :class:`Transport` carries
the messages: in-process (:class:`InProcessTransport`) or Flower 1.42
(:class:`FlowerTransport`; the ServerApp and ClientApp are in :mod:`deploy.flower_app`).
Every site talks to the ledger (an EVM node
over JSON-RPC) with its own account. Threat model: that of the round protocol
(docs/threat-model.md); the transport adds no trust (every blob and manifest is checked
against the ledger by its receiver).
"""

from deploy._commit_modes import AlreadySignedError, InclusionProofError, LeafOmittedError
from deploy._committee import (
    ROLE_COMMITTEE,
    CommitteeReleaseError,
    CommitteeSite,
    CommitteeSiteError,
)
from deploy._driver import DeploymentRun, DeploymentSettings, RoundDriver
from deploy._errors import DeploymentError, SettingsError, WireFormatError
from deploy._hospital import ROLE_HOSPITAL, HospitalSite
from deploy._keyholder import ROLE_KEY_HOLDER, KeyHolderSite
from deploy._sites import SitePolicy, SitePolicyError
from deploy._transport import Exchange, FlowerTransport, InProcessTransport, Transport
from deploy._wire import (
    COMMITTEE_COMBINE,
    COMMITTEE_KEYGEN,
    COMMITTEE_RELEASE,
    COMMITTEE_SETUP,
    COMMITTEE_TYPES,
    EVALUATE,
    JOIN,
    MASK_ADVERTISE,
    MASK_CONSISTENCY,
    MASK_REBUT,
    MASK_SHARE,
    MASK_TYPES,
    MASK_UNMASK,
    MESSAGE_TYPES,
    RELEASE,
    REVEAL,
    TRAIN,
    WIRE_VERSION,
    WireMessage,
)

__all__ = [
    "COMMITTEE_COMBINE",
    "COMMITTEE_KEYGEN",
    "COMMITTEE_RELEASE",
    "COMMITTEE_SETUP",
    "COMMITTEE_TYPES",
    "EVALUATE",
    "JOIN",
    "MASK_ADVERTISE",
    "MASK_CONSISTENCY",
    "MASK_REBUT",
    "MASK_SHARE",
    "MASK_TYPES",
    "MASK_UNMASK",
    "MESSAGE_TYPES",
    "RELEASE",
    "REVEAL",
    "ROLE_COMMITTEE",
    "ROLE_HOSPITAL",
    "ROLE_KEY_HOLDER",
    "TRAIN",
    "WIRE_VERSION",
    "AlreadySignedError",
    "CommitteeReleaseError",
    "CommitteeSite",
    "CommitteeSiteError",
    "DeploymentError",
    "DeploymentRun",
    "DeploymentSettings",
    "Exchange",
    "FlowerTransport",
    "HospitalSite",
    "InProcessTransport",
    "InclusionProofError",
    "KeyHolderSite",
    "LeafOmittedError",
    "RoundDriver",
    "SettingsError",
    "SitePolicy",
    "SitePolicyError",
    "Transport",
    "WireFormatError",
    "WireMessage",
]
