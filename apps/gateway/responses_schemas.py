"""Request bodies of OpenAI's Responses API (`POST /v1/responses`), validated at the edge before their translation
into a chat completion (apps.gateway.responses).

Only what the translation carries is declared; other top-level fields (`include`, `reasoning`, `truncation`,
`service_tier`, ...) are accepted and ignored, since the engine behind speaks the chat completions API. Every string
that may be recorded (model, user, tool names and call ids) is bounded and free of control characters.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictStr, Tag

from apps.gateway.schemas import Metadata, ModelName, PositiveInt, UserName

# OpenAI's rule for function names; call ids are what a client echoes back from a function_call item.
FunctionName = Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
CallId = Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_.:-]{1,128}$")]
# Any id is looked up (an unknown one is a 404, as OpenAI answers), but only a bounded, printable one.
ResponseId = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
VectorStoreId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
INPUT_ITEMS_MAX = 2048


class _Item(BaseModel):
    # Unknown fields of an item (`id`, `status`, `annotations`, `logprobs`) are accepted and dropped.
    model_config = ConfigDict(extra="ignore", frozen=True)


class InputText(_Item):
    type: Literal["input_text"]
    text: StrictStr


class OutputText(_Item):
    """Text of an earlier answer, as a client passes `response.output` back in."""

    type: Literal["output_text"]
    text: StrictStr


class Refusal(_Item):
    type: Literal["refusal"]
    refusal: StrictStr


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: Annotated[StrictStr, Field(min_length=1)]
    detail: Literal["low", "high", "auto"] | None = None


ContentPart = Annotated[InputText | OutputText | Refusal | InputImage, Field(discriminator="type")]


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: StrictStr | list[ContentPart]


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: CallId
    name: FunctionName
    arguments: StrictStr


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: CallId
    output: StrictStr | list[InputText]


class FileSearchCallItem(_Item):
    """An earlier answer's search, passed back in: nothing to translate (its chunks were that turn's context)."""

    type: Literal["file_search_call"]


def _item_kind(value: Any) -> str:
    # An item without `type` is a message (OpenAI's "easy input message"), as the official clients send them.
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[FileSearchCallItem, Tag("file_search_call")],
    Discriminator(_item_kind),
]


class FunctionTool(_Item):
    type: Literal["function"]
    name: FunctionName
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class FileSearchTool(_Item):
    type: Literal["file_search"]
    vector_store_ids: Annotated[list[VectorStoreId], Field(min_length=1, max_length=10)]
    max_num_results: Annotated[PositiveInt, Field(le=20)] | None = None
    filters: dict[str, Any] | None = None


Tool = Annotated[FunctionTool | FileSearchTool, Field(discriminator="type")]


class ToolChoiceFunction(_Item):
    type: Literal["function"]
    name: FunctionName


class ToolChoiceFileSearch(_Item):
    type: Literal["file_search"]


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[ToolChoiceFunction | ToolChoiceFileSearch, Field(discriminator="type")]
)


class FormatText(_Item):
    type: Literal["text"]


class FormatJsonObject(_Item):
    type: Literal["json_object"]


class FormatJsonSchema(_Item):
    type: Literal["json_schema"]
    name: FunctionName
    schema_: dict[str, Any] = Field(alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None


class TextConfig(_Item):
    format: Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")] | None = None


class ResponsesRequest(_Item):
    """`POST /v1/responses`."""

    model: ModelName
    input: StrictStr | Annotated[list[InputItem], Field(max_length=INPUT_ITEMS_MAX)]
    instructions: StrictStr | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextConfig | None = None
    stream: StrictBool = False
    store: StrictBool | None = Field(
        default=None,
        description="Accepted; Inferia stores a response only when the organisation's policy enables "
        "`responses_store` (then for INFERIA_RESPONSES_TTL_SECONDS). Otherwise nothing is stored.",
    )
    previous_response_id: ResponseId | None = None
    metadata: Metadata | None = None
    user: UserName | None = None
    # Inferia's prompt templates, as on chat completions (`extra_body` in the official client).
    template: StrictStr | None = Field(
        default=None,
        description="A prompt template of the caller's organisation (`name`, `name@latest`, `name@3`), rendered as on "
        "`/v1/chat/completions`: its messages come before the request's own.",
    )
    template_variables: dict[str, StrictStr] | None = None
