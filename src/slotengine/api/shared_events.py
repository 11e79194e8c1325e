"""One execution per subscription event, shared by every listener that asked the same thing.

A thousand listeners of one slot receive the same Slot object for each change; executing
the same document with the same variables on it a thousand times gives a thousand equal
results. The executor below runs it once and hands the result to the others, which takes
GraphQL execution out of the per-listener cost of a fan-out.

Only events whose fields read nothing but the event itself (not the caller, not the
database) may be shared: those types are listed in SHAREABLE_EVENTS.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from typing import Any

from graphql import ExecutionResult
from graphql.pyutils import AwaitableOrValue
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from slotengine.api.types import Slot
from slotengine.service.views import LiveMessage, SlotView

SHAREABLE_EVENTS: tuple[type, ...] = (Slot,)
_RESULTS_KEPT = 512

# (id(operation), variables, id(event)) -> (operation, event, result). The entry keeps the
# operation and event alive, so their ids cannot be reused by other objects while it is here.
_results: OrderedDict[tuple[int, str, int], tuple[Any, Any, AwaitableOrValue[Any]]] = OrderedDict()


@functools.lru_cache(maxsize=4096)
def shared_slot(message: LiveMessage[SlotView]) -> Slot:
    """The one Slot object for a given state and cursor, so that listeners there share results."""
    return Slot.live(message)


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with subscription events of shareable types executed once."""

    def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
        event = self.root_value
        if not isinstance(event, SHAREABLE_EVENTS):
            return super().execute_operation(serially)
        try:
            variables = json.dumps(self.variable_values, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return super().execute_operation(serially)
        key = (id(self.operation), variables, id(event))
        kept = _results.get(key)
        if kept is not None and kept[0] is self.operation and kept[1] is event:
            _results.move_to_end(key)
            return kept[2]
        result = super().execute_operation(serially)
        if isinstance(result, ExecutionResult) and not result.errors:
            _results[key] = (self.operation, event, result)
            if len(_results) > _RESULTS_KEPT:
                _results.popitem(last=False)
        return result
