"""Request bodies of Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`), validated at the edge
before their translation into a chat completion (apps.gateway.messages).

Only what the translation carries is declared; other top-level fields (vendor options such as `thinking` or
`service_tier`) are ignored, since the engine behind speaks OpenAI's API. Every string that may be recorded (model,
user id, tool names and ids) is bounded and free of control characters, as on the OpenAI endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from apps.gateway.schemas import ModelName, PositiveInt, UserName

# Anthropic's own rule for tool names; ids are what a client echoes back from a tool_use block.
ToolName = Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
ToolUseId = Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_.:-]{1,128}$")]
StopSequence = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class _Block(BaseModel):
    # Unknown block fields (`cache_control`, `citations`) are accepted and dropped.
    model_config = ConfigDict(extra="ignore", frozen=True)


class TextBlock(_Block):
    type: Literal["text"]
    text: StrictStr


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: ToolUseId
    name: ToolName
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: ToolUseId
    content: StrictStr | list[TextBlock] | None = None
    is_error: StrictBool | None = None


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class Message(_Block):
    role: Literal["user", "assistant"]
    content: StrictStr | list[ContentBlock]


class Tool(_Block):
    name: ToolName
    description: StrictStr | None = None
    input_schema: dict[str, Any]


class ToolChoiceAuto(_Block):
    type: Literal["auto"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceAny(_Block):
    type: Literal["any"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceTool(_Block):
    type: Literal["tool"]
    name: ToolName
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceNone(_Block):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class JsonOutputFormat(_Block):
    """Structured output: the answer is JSON that fits `schema` (an OpenAI `response_format` of type json_schema)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Block):
    # Other options (`effort`) tune Anthropic's own models; the engine behind has no counterpart.
    format: JsonOutputFormat | None = None


class RequestMetadata(_Block):
    user_id: UserName | None = None


class CountTokensRequest(_Block):
    """`POST /v1/messages/count_tokens`: the prompt of a message request."""

    model: ModelName
    messages: Annotated[list[Message], Field(min_length=1)]
    system: StrictStr | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`."""

    max_tokens: PositiveInt
    stop_sequences: Annotated[list[StopSequence], Field(max_length=16)] | None = None
    stream: StrictBool = False
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: PositiveInt | None = None
    metadata: RequestMetadata | None = None
    output_config: OutputConfig | None = None
