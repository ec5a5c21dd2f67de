"""Exceptions of the ``chain`` package: one root, named cases, one class per contract error.

Reverts are decoded from their 4-byte selector against the ABI's error entries into a
subclass of ``LedgerRevertError`` named after the Solidity custom error, carrying the
decoded arguments in ``.args_dict``.
"""

from __future__ import annotations

from typing import Any


class ChainError(Exception):
    """Root of every error raised by the ``chain`` package."""


class ChainConfigError(ChainError, ValueError):
    """A backend or ledger parameter is invalid (names the field and the allowed range)."""


class ArtifactError(ChainError):
    """The compiled artifact is missing or does not match the contract source."""


class BackendError(ChainError):
    """A node could not be started, reached or stopped."""


class TransactionFailedError(ChainError):
    """A transaction failed without a decodable custom error (e.g. out of gas)."""


class LedgerRevertError(ChainError):
    """The ledger contract reverted with a custom error.

    ``error_name`` is the Solidity error's name and ``args_dict`` its decoded arguments.
    """

    error_name: str = "LedgerRevertError"

    def __init__(self, error_name: str, args_dict: dict[str, Any] | None = None) -> None:
        self.error_name = error_name
        self.args_dict = dict(args_dict or {})
        rendered = ", ".join(f"{k}={v!r}" for k, v in self.args_dict.items())
        super().__init__(f"{error_name}({rendered})")


class NotAdmin(LedgerRevertError):
    """The sender is not the ledger admin."""


class NotRegistered(LedgerRevertError):
    """The account lacks the role the call needs."""


class InvalidRoles(LedgerRevertError, ValueError):
    """Unknown role bits."""


class ZeroAddress(LedgerRevertError, ValueError):
    """The zero address cannot hold a role."""


class RoundExists(LedgerRevertError):
    """A round with that id was already opened."""


class WrongRound(LedgerRevertError):
    """The round does not exist or is not in the state the call needs."""


class WrongMode(LedgerRevertError):
    """Direct commit in a batched round, or a batch in a direct round."""


class BadClientList(LedgerRevertError, ValueError):
    """Empty/oversized selection, or a list that does not match the round's selection."""


class ClientsNotSorted(LedgerRevertError, ValueError):
    """Selected clients must be strictly ascending addresses (no duplicates)."""


class DeadlineInPast(LedgerRevertError, ValueError):
    """The round deadline is before the current block."""


class DeadlinePassed(LedgerRevertError):
    """The commit arrived after the round's deadline block."""


class NotSelected(LedgerRevertError):
    """A registered client that was not selected for the round."""


class AlreadyCommitted(LedgerRevertError):
    """The client already committed in this round."""


class NotCommitted(LedgerRevertError):
    """A published participant did not commit in the round."""


class BadRevealDeadline(LedgerRevertError, ValueError):
    """The reveal deadline is not after the commit deadline."""


class WrongManifest(LedgerRevertError):
    """A commitment names another manifest digest than the round's config digest."""


class CommitPhaseOpen(LedgerRevertError):
    """Too early: clients can still commit (deadline not passed, not all committed)."""


class RevealPhaseOpen(LedgerRevertError):
    """Publishing without every committed client before the reveal deadline."""


class NotRevealed(LedgerRevertError):
    """A published participant did not reveal (direct rounds)."""


class AlreadyRevealed(LedgerRevertError):
    """The client already recorded its reveal in this round."""


class BadReason(LedgerRevertError, ValueError):
    """A refusal must carry a non-zero reason code."""


class BudgetExceeded(LedgerRevertError):
    """The claimed cumulative epsilon exceeds the per-client budget."""


class BadIndex(LedgerRevertError, ValueError):
    """A signed commit names an index outside the selected list."""


class MalformedCommit(LedgerRevertError, ValueError):
    """A batched commit's packed metadata word has bits set above bit 87."""


class HighS(LedgerRevertError):
    """A signature with s > n/2 (malleable); only low-s signatures are accepted."""


class InvalidSignature(LedgerRevertError):
    """The EIP-712 signature does not recover to the selected client."""


class AlreadyFlagged(LedgerRevertError):
    """That auditor flag (client, round, reason) was already recorded."""


class BadChallengeWindow(LedgerRevertError, ValueError):
    """A merkle round needs a challenge window of at least one block."""


class StaleRoundState(LedgerRevertError):
    """The merkle round state passed does not hash to the stored key (stale or forged)."""


class BudgetChanged(LedgerRevertError):
    """A merkle round's opening named another epsilon budget than the one in force (the
    aggregator checked the leaves against a budget the admin has since changed)."""


class BadLeafCount(LedgerRevertError, ValueError):
    """More leaves than selected clients."""


class BadParticipants(LedgerRevertError, ValueError):
    """A participants bitmap of the wrong length, with bits past n, empty, or not the one
    published."""


class ChallengeWindowClosed(LedgerRevertError):
    """The challenge came after the round's challenge deadline (or after settlement)."""


class ChallengeWindowOpen(LedgerRevertError):
    """Settling before the challenge window has passed."""


class BadProof(LedgerRevertError):
    """The Merkle proof does not lead to the round's root (a false challenge)."""


class NotOmitted(LedgerRevertError):
    """Omission challenge of a leaf that is in the root (a false challenge)."""


class WithinBudget(LedgerRevertError):
    """Over-budget challenge of a claim within the budget (a false challenge)."""


class SameLeaf(LedgerRevertError):
    """Equivocation challenge with two signatures of the same leaf (a false challenge)."""


class AlreadyChallenged(LedgerRevertError):
    """That challenge (round, client, reason) was already upheld."""


REVERT_CLASSES: dict[str, type[LedgerRevertError]] = {
    cls.__name__: cls
    for cls in (
        NotAdmin,
        NotRegistered,
        InvalidRoles,
        ZeroAddress,
        RoundExists,
        WrongRound,
        WrongMode,
        BadClientList,
        ClientsNotSorted,
        DeadlineInPast,
        DeadlinePassed,
        NotSelected,
        AlreadyCommitted,
        NotCommitted,
        BadRevealDeadline,
        WrongManifest,
        CommitPhaseOpen,
        RevealPhaseOpen,
        NotRevealed,
        AlreadyRevealed,
        BadReason,
        BudgetExceeded,
        BadIndex,
        MalformedCommit,
        HighS,
        InvalidSignature,
        AlreadyFlagged,
        BadChallengeWindow,
        StaleRoundState,
        BudgetChanged,
        BadLeafCount,
        BadParticipants,
        ChallengeWindowClosed,
        ChallengeWindowOpen,
        BadProof,
        NotOmitted,
        WithinBudget,
        SameLeaf,
        AlreadyChallenged,
    )
}
