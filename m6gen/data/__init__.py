"""Data: read interaction and item files, build time-ordered histories, split leave-one-out by time.

The first stage of the flow (data -> prompt -> constrained beams -> reranked list). Pure Python and
numpy: nothing here imports torch, a model or a command.
"""

from m6gen.data.histories import *  # noqa: F401,F403  (the public entry point: load_dataset, leave_one_out, ...)
from m6gen.data.histories import __all__  # noqa: F401
from m6gen.data.new_items import hold_out, latest_items, new_item_split, new_item_users  # noqa: F401,E402
