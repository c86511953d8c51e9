"""``Ledger``: the one object callers hold, assembled from the ledger's parts.

Each part is a ``LedgerCore`` subclass in its own module (accounts, jobs, leases,
deliveries, reads, audit); ``Ledger`` only puts them together, so a method lives
next to the rule it writes, and every caller still imports one name.
"""

from __future__ import annotations

from typing import final

from ._accounts import AccountWrites
from ._audit import Audit
from ._connectors import ConnectorWrites
from ._deliveries import Deliveries
from ._jobs import JobWrites
from ._leases import Leases
from ._reads import Reads
from ._schedules import ScheduleWrites
from ._server import ServerSecrets

__all__ = ["Ledger"]


@final
class Ledger(
    AccountWrites,
    JobWrites,
    Leases,
    Deliveries,
    Reads,
    Audit,
    ServerSecrets,
    ScheduleWrites,
    ConnectorWrites,
):
    """The ledger of one SQLite file. Open it with ``Ledger.open``.

    Args:
        path: The database file (created with its schema if missing).
        clock: Unix time source (tests pass a fake one).
        box: Seals the jobs' cookie and header values (``Ledger.open`` makes one).
    """
