"""The ledger layer of a run: consortium, artifact store and the hardened round protocol.

With ``chain=inprocess|anvil|rpc`` the runner opens the backend, deploys the consortium's
ledger, registers fresh accounts for every party (keys stay in memory) and drives every
round through :class:`secagg.SecureRoundProtocol`: commitments, blind combination,
attested reveal, finalization, a per-round audit whose findings flag the culprits, and
reputation-based selection. ``chain=none`` keeps the plain in-memory aggregation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chain import ChainError, commit_mode_of, open_backend
from experiments._errors import ConfigError
from secagg import (
    AuditReport,
    Consortium,
    LocalDirectoryStore,
    ProtectionScheme,
    SecureRoundProtocol,
    audit,
)


@dataclasses.dataclass
class LedgerLayer:
    """What the federation needs of the ledger: the protocol and where things live."""

    protocol: SecureRoundProtocol
    backend_name: str
    url: str | None
    store_dir: Path

    @property
    def consortium(self) -> Consortium:
        return self.protocol.consortium

    def entry(self) -> dict[str, Any]:
        """``results.json``'s ``ledger`` entry (no keys, no URL credentials)."""
        ledger = self.consortium.ledger
        return {
            "backend": self.backend_name,
            "url": self.url,
            "chain_id": ledger.chain_id,
            "address": str(ledger.address),
            "store": str(self.store_dir),
            "deploy_gas": getattr(ledger, "deploy_gas", None),
        }

    def final_audit(self) -> AuditReport:
        """A fresh auditor's verdict over every round, from ledger and store alone."""
        return audit(self.consortium.ledger, self.consortium.store)


def _scheme_config(schema: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(schema) and not isinstance(schema, type):
        return dataclasses.asdict(schema)
    return dict(schema)


@contextlib.contextmanager
def open_ledger_layer(
    chain_schema: Any,
    *,
    n_clients: int,
    scheme: ProtectionScheme,
    scheme_schema: Any,
    dim: int,
    dp_mode: str,
    output_dir: Path | None,
    dp_budget: float | None = None,
) -> Iterator[LedgerLayer | None]:
    """Open the ledger ``chain_schema`` names (None for ``chain=none``); stops a node it
    started on exit. The on-chain per-client budget is ``chain.epsilon_budget``, lowered to
    ``dp_budget`` (the DP budget each client promises) when that is smaller, so the
    contract and the auditor enforce the run's own privacy promise."""
    if chain_schema.name == "none":
        yield None
        return
    with contextlib.ExitStack() as stack:
        if chain_schema.store_dir is not None:
            store_dir = Path(chain_schema.store_dir)
        elif output_dir is not None:
            store_dir = output_dir / "artifacts"
        else:  # a run without an output directory keeps its artifacts only while it runs
            store_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="secagg-")))
        store_dir = store_dir.resolve()
        try:
            backend = stack.enter_context(open_backend(chain_schema))
            consortium = Consortium.create(
                backend,
                n_clients=n_clients,
                store=LocalDirectoryStore(store_dir),
                epsilon_budget=min(
                    chain_schema.epsilon_budget,
                    dp_budget if dp_budget is not None else chain_schema.epsilon_budget,
                ),
                deadline_blocks=chain_schema.deadline_blocks,
                commit_mode=commit_mode_of(chain_schema),
                challenge_window=chain_schema.challenge_window,
                reputation_threshold=chain_schema.reputation_threshold,
            )
        except ChainError as error:
            if isinstance(error, ValueError):
                raise ConfigError(f"chain.{error}") from error
            raise
        protocol = SecureRoundProtocol(
            consortium=consortium,
            scheme=scheme,
            scheme_config=_scheme_config(scheme_schema),
            dim=dim,
            dp_mode=dp_mode,
        )
        yield LedgerLayer(
            protocol=protocol,
            backend_name=chain_schema.name,
            url=getattr(backend, "public_url", None),
            store_dir=store_dir,
        )
