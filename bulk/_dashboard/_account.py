"""The account page's sections: what it shows, one section per concept.

Each section is a template (``templates/account_*.html``) and a loader that reads what
it shows. Schedules and connectors, as they land, are one more ``AccountSection``
each, appended to ``ACCOUNT_SECTIONS`` (their forms post to routes of their own,
added in ``_views.routes``); the page itself does not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs

from .._api import ServiceState
from .._ledger import MAX_KEYS_PER_ACCOUNT, Account

__all__ = ["ACCOUNT_SECTIONS", "AccountSection"]

Loader = Callable[[ServiceState, Account], Awaitable[Mapping[str, Any]]]


@attrs.frozen
class AccountSection:
    """One section of the account page.

    Args:
        template: Rendered with the page's context plus what ``load`` returns.
        load: Reads what the section shows (through the ledger, like the API).
    """

    template: str
    load: Loader


async def _credits(state: ServiceState, account: Account) -> Mapping[str, Any]:
    in_flight = await state.ledger.jobs(
        statuses=("pending", "processing", "packaging"), kinds=("bulk",), account_id=account.id
    )
    return {"jobs_in_flight": len(in_flight)}


async def _keys(state: ServiceState, account: Account) -> Mapping[str, Any]:
    keys = await state.ledger.keys(account.id)
    active = sum(1 for k in keys if k["active"])
    return {"keys": keys, "key_limit": MAX_KEYS_PER_ACCOUNT, "keys_active": active}


async def _webhook(state: ServiceState, account: Account) -> Mapping[str, Any]:
    return {}


ACCOUNT_SECTIONS: Final[list[AccountSection]] = [
    AccountSection("account_credits.html", _credits),
    AccountSection("account_keys.html", _keys),
    AccountSection("account_webhook.html", _webhook),
]
