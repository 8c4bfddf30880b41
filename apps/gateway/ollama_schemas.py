"""Request bodies of Ollama's API (`/ollama/api/...`), validated at the edge before their translation into a chat
completion, completion or embedding (apps.gateway.ollama).

Only what the translation carries is declared. Fields that concern a local Ollama server's own model loading
(`keep_alive`, `truncate`, `think`, `logprobs`, and options such as `num_ctx` or `num_gpu`) are accepted and
ignored: the engine behind decides them. Every string that may be recorded (model, tool names) is bounded and free
of control characters, as on the OpenAI endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from apps.gateway.messages_schemas import StopSequence, ToolName
from apps.gateway.schemas import ModelName, PositiveInt

# `""` asks for no format, `"json"` for any JSON object, a dict for JSON that fits that schema.
Format = Literal["", "json"] | dict[str, Any]


class _Lenient(BaseModel):
    # Ollama's clients send fields for a local server (`keep_alive`, `think`, ...): accepted and dropped.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Options(_Lenient):
    """The sampling options that carry over to the engine (the others tune a local Ollama runner)."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: PositiveInt | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    # Ollama's own meaning: a positive bound, -1 for no bound, -2 to fill the context (both: none asked for).
    num_predict: StrictInt | None = None
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=16)] | None = None
    seed: StrictInt | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None


class ToolCallFunction(_Lenient):
    name: ToolName
    arguments: dict[str, Any]


class ToolCall(_Lenient):
    function: ToolCallFunction


class Message(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: StrictStr = ""
    images: list[StrictStr] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: ToolName | None = None


class ToolFunction(_Lenient):
    name: ToolName
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: ToolFunction


class _Generating(_Lenient):
    model: ModelName
    # Ollama streams unless told not to.
    stream: StrictBool = True
    format: Format | None = None
    options: Options | None = None


class ChatRequest(_Generating):
    """`POST /ollama/api/chat`. No messages at all asks Ollama to load the model: answered at once."""

    messages: list[Message] = []
    tools: list[Tool] | None = None


class GenerateRequest(_Generating):
    """`POST /ollama/api/generate`: a prompt, answered as a chat turn of the model (its chat template applies), or as
    a plain completion of the prompt as given with `raw`. No prompt at all asks Ollama to load the model."""

    prompt: StrictStr = ""
    system: StrictStr | None = None
    raw: StrictBool = False
    # Features of a local Ollama server that the engine behind cannot honour: refused when given (not silently lost).
    suffix: StrictStr | None = None
    template: StrictStr | None = None
    context: list[StrictInt] | None = None
    images: list[StrictStr] | None = None


class EmbedRequest(_Lenient):
    """`POST /ollama/api/embed`."""

    model: ModelName
    input: Annotated[StrictStr, Field(min_length=1)] | Annotated[list[StrictStr], Field(min_length=1)]
    dimensions: PositiveInt | None = None


class ShowRequest(_Lenient):
    """`POST /ollama/api/show` (older clients name the model `name`)."""

    model: ModelName = Field(validation_alias=AliasChoices("model", "name"))
