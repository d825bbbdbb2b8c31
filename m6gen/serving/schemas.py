"""Request and response bodies of the HTTP API; FastAPI turns them into the OpenAPI docs at ``/docs``.

Requests are strict: a number sent as a string, a float where a whole number belongs or an unknown
key is an error naming the field, never silently coerced or ignored. The request models are flat
(no nested models), so their JSON schema can be given to the docs as it is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from m6gen.ranking.rerank import MAX_WEIGHT

ItemRef = str | int  # an item id of the data files, or an exact catalog title
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class RecommendRequest(BaseModel):
    """Whose top-k, and how it is ranked. Give ``history`` or ``user_id``, not both."""

    model_config = STRICT

    history: list[ItemRef] | None = Field(
        None, description="items the user liked, oldest first: item ids or exact titles (at most --max-history-items)"
    )
    user_id: str | int | None = Field(None, description="a user of the loaded data: every item they interacted with")
    k: int | None = Field(None, ge=1, description="how many items (default: the server's --k; at most its --beams)")
    diversity: float | None = Field(
        None, ge=0, le=MAX_WEIGHT, description="reranker diversity weight, 0 to 1000 (default: the server's)"
    )
    novelty: float | None = Field(
        None, ge=0, le=MAX_WEIGHT, description="reranker novelty weight, 0 to 1000 (default: the server's)"
    )
    exclude: list[ItemRef] = Field([], description="items never to recommend, besides the history")
    rank_by: Literal["logprob", "normalized", "catalog"] | None = Field(
        None, description="beam score to rank by (default: the server's --rank-by)"
    )
    open: bool = Field(False, description="open-ended: the model may name titles outside the catalog (flagged)")
    cold_only: bool = Field(
        False,
        description="only cold items, those no training interaction of the loaded data names (new arrivals): "
        "a shelf of new items next to the usual list",
    )


class ExplainRequest(BaseModel):
    """Why an item suits a history, in the model's words. Give ``item`` (catalog) or ``title`` (any text)."""

    model_config = STRICT

    history: list[ItemRef] | None = Field(None, description="items the user liked, oldest first")
    user_id: str | int | None = Field(None, description="a user of the loaded data, instead of history")
    item: ItemRef | None = Field(None, description="the recommended item: an item id or exact catalog title")
    title: str | None = Field(None, max_length=300, description="or any title, e.g. one open mode named")


class Recommended(BaseModel):
    """One ranked item; the score breakdown is null for open-mode titles."""

    rank: int
    item_id: str | None = Field(description="the data's item id; null for a title outside the catalog")
    title: str
    in_catalog: bool
    score: float | None = Field(description="the reranker's gain when the item was picked")
    accuracy: float | None = Field(description="calibrated beam probability among the user's candidates")
    diversity: float | None = Field(description="dissimilarity to the items ranked above it")
    novelty: float | None = Field(description="popularity self-information, 0..1")
    logprob: float = Field(description="the language model's log-probability of the title")


class RecommendResponse(BaseModel):
    items: list[Recommended]
    filled: bool = Field(description="false when fewer than k unseen items were found")
    k: int
    open: bool
    history_size: int = Field(description="items in the history used (all excluded from the list)")


class ExplainResponse(BaseModel):
    title: str
    explanation: str


class ItemMatch(BaseModel):
    item_id: str
    title: str


class ItemsResponse(BaseModel):
    query: str
    how: Literal["exact", "prefix", "fuzzy", "none"] = Field(description="how the items matched the query")
    items: list[ItemMatch]


class ErrorResponse(BaseModel):
    error: str = Field(description="what is wrong and what was expected, starting with the field")
    field: str | None = Field(description="the field at fault: k, history[3], body, q, authorization, ...")
    suggestions: list[str] | None = Field(None, description="for an unknown title: catalog titles that come close")
