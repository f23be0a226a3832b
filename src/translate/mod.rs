//! Format translation: a client of one API format calling a model whose provider speaks
//! another. OpenAI chat completions (`/v1/chat/completions`, plain and streamed, tools and
//! images) served by an Anthropic Messages provider, and Anthropic Messages (`/v1/messages`)
//! served by an OpenAI-format provider; OpenAI chat completions served by a Gemini provider
//! (`generateContent`, streamed as `streamGenerateContent?alt=sse`); OpenAI chat completions
//! served by a Bedrock provider (`Converse`, streamed as `ConverseStream`, AWS event stream);
//! and Anthropic Messages served by a Gemini or a Bedrock provider, as two legs through the
//! chat format (Messages to chat to Gemini or Converse, and back), so each mapping is written
//! once.
//!
//! The request is translated before it is sent; the response and its stream after the tap has
//! metered them, so metering always reads the provider's native usage (the tap parses the
//! upstream's format) and the client gets its own format. What cannot be translated faithfully
//! is refused with a 400 naming the field, never dropped silently.
//!
//! Translation builds `serde_json::Value`s: it costs more than the byte-splicing pass-through
//! (one parse and one serialisation of the request, each response event parsed twice), and is
//! only ever used for requests that need it.

mod chat_content;
mod chat_via_converse;
mod chat_via_gemini;
mod chat_via_messages;
mod messages_via_chat;

use bytes::Bytes;

use crate::providers::{Endpoint, ProviderKind};
use crate::proxy::eventstream::EventStreamScanner;
use crate::proxy::sse::SseScanner;

pub use chat_via_converse::{ConverseToChatStream, chat_to_converse, converse_to_chat};
pub use chat_via_gemini::{GeminiToChatStream, chat_to_gemini, gemini_to_chat};
pub use chat_via_messages::{
    MessagesToChatStream, chat_to_messages, error_to_openai, message_to_chat,
};
pub use messages_via_chat::{
    ChatToMessagesStream, chat_to_message, error_to_anthropic, messages_to_chat,
};

/// A request field that has no faithful equivalent in the provider's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` cannot be translated for this model's provider: {reason}")]
pub struct Untranslatable {
    /// The field's path in the client's request, e.g. `messages[2].content[0].type`.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl Untranslatable {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Untranslatable {
        Untranslatable {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A translation between the client's endpoint and the provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// OpenAI chat completions from the client, Anthropic Messages upstream.
    ChatViaMessages,
    /// Anthropic Messages from the client, OpenAI chat completions upstream; `openai`: the
    /// provider is OpenAI or Azure OpenAI (their reasoning models take only `max_completion_tokens`).
    MessagesViaChat {
        /// OpenAI itself, not an OpenAI-compatible server.
        openai: bool,
    },
    /// OpenAI chat completions from the client, Gemini `generateContent` upstream;
    /// `stream`: the client streams (`streamGenerateContent?alt=sse` upstream).
    ChatViaGemini {
        /// The client asked for a stream.
        stream: bool,
    },
    /// OpenAI chat completions from the client, Bedrock `Converse` upstream; `stream`: the
    /// client streams (`ConverseStream` upstream).
    ChatViaConverse {
        /// The client asked for a stream.
        stream: bool,
    },
    /// Anthropic Messages from the client, Gemini upstream: Messages to chat to Gemini, and
    /// the answer back through chat.
    MessagesViaGemini {
        /// The client asked for a stream.
        stream: bool,
    },
    /// Anthropic Messages from the client, Bedrock `Converse` upstream, through chat.
    MessagesViaConverse {
        /// The client asked for a stream.
        stream: bool,
    },
    /// OpenAI chat completions from the client, Claude on Vertex AI upstream (`rawPredict`,
    /// `streamRawPredict`: a Messages body with `anthropic_version` and no `model`).
    ChatViaVertexClaude {
        /// The client asked for a stream.
        stream: bool,
    },
    /// Anthropic Messages from the client, Claude on Vertex AI upstream: only the body's
    /// `model` moves to the path and `anthropic_version` is set; the answer is the client's
    /// format already.
    MessagesViaVertexClaude {
        /// The client asked for a stream.
        stream: bool,
    },
}

impl Translation {
    /// The translation that lets a provider of `kind` serving the endpoints `serves` answer
    /// `endpoint` for `model` (the upstream's name), if there is one; `stream`: the client
    /// asked for a stream.
    pub fn between(
        endpoint: Endpoint,
        kind: ProviderKind,
        serves: impl Fn(Endpoint) -> bool,
        stream: bool,
        model: &str,
    ) -> Option<Translation> {
        // OpenAI's and Azure's reasoning models take only `max_completion_tokens`.
        let openai = matches!(kind, ProviderKind::OpenAi | ProviderKind::AzureOpenAi);
        // Vertex AI serves Gemini (`publishers/google`, the Gemini API's bodies) and Claude
        // (`publishers/anthropic`, Messages bodies) of one project; its Claude ids all start
        // with `claude-` (`claude-sonnet-4-5@20250929`), its Gemini ones never do.
        let vertex_claude = kind == ProviderKind::Vertex && model.starts_with("claude-");
        let gemini =
            kind == ProviderKind::Gemini || (kind == ProviderKind::Vertex && !vertex_claude);
        match endpoint {
            Endpoint::ChatCompletions if serves(Endpoint::Messages) => {
                Some(Translation::ChatViaMessages)
            }
            Endpoint::ChatCompletions if vertex_claude => {
                Some(Translation::ChatViaVertexClaude { stream })
            }
            Endpoint::Messages if vertex_claude => {
                Some(Translation::MessagesViaVertexClaude { stream })
            }
            Endpoint::ChatCompletions if gemini => Some(Translation::ChatViaGemini { stream }),
            Endpoint::ChatCompletions if kind == ProviderKind::Bedrock => {
                Some(Translation::ChatViaConverse { stream })
            }
            Endpoint::Messages if serves(Endpoint::ChatCompletions) => {
                Some(Translation::MessagesViaChat { openai })
            }
            Endpoint::Messages if gemini => Some(Translation::MessagesViaGemini { stream }),
            Endpoint::Messages if kind == ProviderKind::Bedrock => {
                Some(Translation::MessagesViaConverse { stream })
            }
            _ => None,
        }
    }

    /// The endpoint called upstream.
    pub fn upstream_endpoint(self) -> Endpoint {
        match self {
            Translation::ChatViaMessages => Endpoint::Messages,
            Translation::ChatViaVertexClaude { stream: false }
            | Translation::MessagesViaVertexClaude { stream: false } => Endpoint::VertexRawPredict,
            Translation::ChatViaVertexClaude { stream: true }
            | Translation::MessagesViaVertexClaude { stream: true } => {
                Endpoint::VertexStreamRawPredict
            }
            Translation::MessagesViaChat { .. } => Endpoint::ChatCompletions,
            Translation::ChatViaGemini { stream: false }
            | Translation::MessagesViaGemini { stream: false } => Endpoint::GenerateContent,
            Translation::ChatViaGemini { stream: true }
            | Translation::MessagesViaGemini { stream: true } => Endpoint::StreamGenerateContent,
            Translation::ChatViaConverse { stream: false }
            | Translation::MessagesViaConverse { stream: false } => Endpoint::BedrockConverse,
            Translation::ChatViaConverse { stream: true }
            | Translation::MessagesViaConverse { stream: true } => Endpoint::BedrockConverseStream,
        }
    }

    /// The upstream query in place of the client's, where the translation sets one: Gemini
    /// streams SSE only with `alt=sse` (else one JSON array).
    pub fn upstream_query(self) -> Option<&'static str> {
        match self {
            Translation::ChatViaGemini { stream: true }
            | Translation::MessagesViaGemini { stream: true } => Some("alt=sse"),
            _ => None,
        }
    }

    /// The upstream request body for the client's `body`.
    pub fn request(
        self,
        body: &[u8],
        upstream_model: Option<&str>,
    ) -> Result<Bytes, Untranslatable> {
        match self {
            Translation::ChatViaMessages => {
                chat_to_messages(body, upstream_model, DEFAULT_MAX_TOKENS).map(Bytes::from)
            }
            Translation::MessagesViaChat { openai } => {
                let field = if openai {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                };
                messages_to_chat(body, upstream_model, field).map(Bytes::from)
            }
            Translation::ChatViaGemini { .. } => chat_to_gemini(body).map(Bytes::from),
            Translation::ChatViaConverse { .. } => chat_to_converse(body).map(Bytes::from),
            Translation::MessagesViaGemini { .. } => {
                through_chat(body, upstream_model, chat_to_gemini)
            }
            Translation::ChatViaVertexClaude { .. } => {
                let messages = chat_to_messages(body, None, DEFAULT_MAX_TOKENS)?;
                vertex_claude_body(&messages).map(Bytes::from)
            }
            Translation::MessagesViaVertexClaude { .. } => {
                vertex_claude_body(body).map(Bytes::from)
            }
            Translation::MessagesViaConverse { .. } => {
                through_chat(body, upstream_model, chat_to_converse)
            }
        }
    }

    /// The translator of the response: `status` and whether the upstream streams (SSE, or
    /// Bedrock's AWS event stream); `include_usage`: the client asked for the final usage chunk;
    /// `model`: the model the client asked for, named in answers whose provider names none
    /// (Converse's).
    pub fn response(
        self,
        status: u16,
        streamed: bool,
        include_usage: bool,
        model: &str,
    ) -> Translator {
        if let Translation::MessagesViaVertexClaude { .. } = self {
            return Translator::Unchanged;
        }
        let success = (200..300).contains(&status);
        if !(streamed && success) {
            return Translator::Whole {
                translation: self,
                body: Vec::new(),
                status,
                over: false,
                model: model.into(),
            };
        }
        let stream = match self {
            Translation::MessagesViaVertexClaude { .. } => return Translator::Unchanged,
            Translation::ChatViaConverse { .. } => {
                return Translator::EventStream {
                    scanner: EventStreamScanner::new(MAX_EVENT_BYTES),
                    stream: Box::new(ConverseToChatStream::new(include_usage, model)),
                    then: None,
                };
            }
            // The chat leg always carries usage: the Messages leg needs it for `message_delta`.
            Translation::MessagesViaConverse { .. } => {
                return Translator::EventStream {
                    scanner: EventStreamScanner::new(MAX_EVENT_BYTES),
                    stream: Box::new(ConverseToChatStream::new(true, model)),
                    then: Some(ToMessages::new()),
                };
            }
            Translation::MessagesViaGemini { .. } => {
                return Translator::Stream {
                    scanner: SseScanner::new(MAX_EVENT_BYTES),
                    stream: Box::new(EventTranslator::GeminiToChat(GeminiToChatStream::new(true))),
                    then: Some(ToMessages::new()),
                };
            }
            Translation::ChatViaMessages | Translation::ChatViaVertexClaude { .. } => {
                EventTranslator::ToChat(MessagesToChatStream::new(include_usage))
            }
            Translation::MessagesViaChat { .. } => {
                EventTranslator::ToMessages(ChatToMessagesStream::new())
            }
            Translation::ChatViaGemini { .. } => {
                EventTranslator::GeminiToChat(GeminiToChatStream::new(include_usage))
            }
        };
        Translator::Stream {
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            stream: Box::new(stream),
            then: None,
        }
    }
}

/// The Messages request `body` as a chat request, then as the provider's by `onward`. A
/// refusal of the second leg names the field as the chat request has it (the Messages
/// request's own fields are checked by the first leg).
fn through_chat(
    body: &[u8],
    upstream_model: Option<&str>,
    onward: fn(&[u8]) -> Result<Vec<u8>, Untranslatable>,
) -> Result<Bytes, Untranslatable> {
    let chat = messages_to_chat(body, upstream_model, "max_tokens")?;
    onward(&chat).map(Bytes::from).map_err(|e| {
        Untranslatable::new(
            e.field,
            format!(
                "{} (the field as the request reads in OpenAI's chat format)",
                e.reason
            ),
        )
    })
}

/// The second leg of a translation through chat: the first leg's chat chunks (SSE bytes) to
/// Anthropic Messages events.
pub struct ToMessages {
    scanner: SseScanner,
    stream: ChatToMessagesStream,
}

impl ToMessages {
    fn new() -> Box<ToMessages> {
        Box::new(ToMessages {
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            stream: ChatToMessagesStream::new(),
        })
    }

    /// The Messages events for the chat bytes `chat`; `end`: the first leg has ended.
    fn feed(&mut self, chat: Bytes, end: bool) -> Bytes {
        let ToMessages { scanner, stream } = self;
        if !chat.is_empty() {
            let passed = scanner.feed(chat, true, &mut |ev| {
                stream.event(ev.data);
                crate::providers::EventKind::UsageOnly
            });
            if !passed.is_empty() {
                stream.lost_event();
            }
        }
        if end {
            let _ = scanner.finish(true, &mut |ev| {
                stream.event(ev.data);
                crate::providers::EventKind::UsageOnly
            });
        }
        stream.take_output()
    }
}

/// The event translator of a stream.
pub enum EventTranslator {
    /// Messages events to chat chunks.
    ToChat(MessagesToChatStream),
    /// Chat chunks to Messages events.
    ToMessages(ChatToMessagesStream),
    /// Gemini chunks to chat chunks.
    GeminiToChat(GeminiToChatStream),
}

impl EventTranslator {
    fn event(&mut self, name: Option<&[u8]>, data: &[u8]) {
        match self {
            EventTranslator::ToChat(s) => s.event(name, data),
            EventTranslator::ToMessages(s) => s.event(data),
            EventTranslator::GeminiToChat(s) => s.event(data),
        }
    }

    fn lost_event(&mut self) {
        match self {
            EventTranslator::ToChat(s) => s.lost_event(),
            EventTranslator::ToMessages(s) => s.lost_event(),
            EventTranslator::GeminiToChat(s) => s.lost_event(),
        }
    }

    fn take_output(&mut self) -> Bytes {
        match self {
            EventTranslator::ToChat(s) => s.take_output(),
            EventTranslator::ToMessages(s) => s.take_output(),
            EventTranslator::GeminiToChat(s) => s.take_output(),
        }
    }
}

/// `max_tokens` of a translated request whose client set none: Anthropic requires one, and
/// OpenAI's default is the model's limit. 4,096 is what LiteLLM sends and above most answers;
/// a client that wants longer ones sets `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The longest upstream event (or whole body) a translation holds: a translated response is
/// parsed, so it must be held whole; 16 MiB is far above any chat response.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// Turns the provider's response bytes into the client's, as they pass.
pub enum Translator {
    /// The provider answers in the client's format (Claude on Vertex AI to a Messages client).
    Unchanged,
    /// A whole body (an answer or an error), translated at its end.
    Whole {
        translation: Translation,
        body: Vec<u8>,
        status: u16,
        /// The body outgrew [`MAX_EVENT_BYTES`]: answered with an error at its end.
        over: bool,
        /// The client's model, for answers that name none.
        model: Box<str>,
    },
    /// An SSE stream, translated event by event; `then`: to Messages events after.
    Stream {
        scanner: SseScanner,
        stream: Box<EventTranslator>,
        then: Option<Box<ToMessages>>,
    },
    /// An AWS event stream (Bedrock's `ConverseStream`), translated message by message;
    /// `then`: to Messages events after.
    EventStream {
        scanner: EventStreamScanner,
        stream: Box<ConverseToChatStream>,
        then: Option<Box<ToMessages>>,
    },
}

impl Translator {
    /// The client's bytes for the next upstream bytes (possibly none yet).
    pub fn feed(&mut self, data: Bytes) -> Bytes {
        match self {
            Translator::Unchanged => data,
            Translator::Whole { body, over, .. } => {
                if body.len() + data.len() > MAX_EVENT_BYTES {
                    *over = true;
                } else {
                    body.extend_from_slice(&data);
                }
                Bytes::new()
            }
            Translator::Stream {
                scanner,
                stream,
                then,
            } => {
                let passed = scanner.feed(data, true, &mut |ev| {
                    stream.event(ev.name, ev.data);
                    crate::providers::EventKind::UsageOnly
                });
                // Only an event over the bound passes the scanner untranslated: drop it (the
                // client could not parse it either) and end the stream with an error.
                if !passed.is_empty() {
                    stream.lost_event();
                }
                onward(then, stream.take_output(), false)
            }
            Translator::EventStream {
                scanner,
                stream,
                then,
            } => {
                // Whole messages are translated; the raw bytes the scanner passes are not
                // the client's.
                let _ = scanner.feed(data, &mut |m| stream.event(m.name(), m.data()));
                if scanner.corrupt().is_some() {
                    stream.corrupt();
                }
                onward(then, stream.take_output(), false)
            }
        }
    }

    /// The client's last bytes, once the upstream body ended.
    pub fn finish(&mut self) -> Bytes {
        match self {
            Translator::Unchanged => Bytes::new(),
            Translator::Whole {
                translation,
                body,
                status,
                over,
                model,
            } => {
                let success = (200..300).contains(status);
                let too_large = "the provider's response is too large to translate";
                let out = match translation {
                    Translation::ChatViaMessages | Translation::ChatViaVertexClaude { .. }
                        if *over =>
                    {
                        error_to_openai(b"", too_large)
                    }
                    Translation::ChatViaMessages | Translation::ChatViaVertexClaude { .. }
                        if success =>
                    {
                        message_to_chat(body).unwrap_or_else(|e| {
                            error_to_openai(b"", &format!("the provider's response: {e}"))
                        })
                    }
                    // Vertex's own errors (a 404 for a model not enabled) are Google's
                    // shape, Claude's are Anthropic's: both carry `error.message`.
                    Translation::ChatViaMessages | Translation::ChatViaVertexClaude { .. } => {
                        error_to_openai(body, "")
                    }
                    Translation::MessagesViaChat { .. } if *over => {
                        error_to_anthropic(500, b"", too_large)
                    }
                    Translation::MessagesViaChat { .. } if success => chat_to_message(body)
                        .unwrap_or_else(|e| {
                            error_to_anthropic(500, b"", &format!("the provider's response: {e}"))
                        }),
                    Translation::MessagesViaChat { .. } => error_to_anthropic(*status, body, ""),
                    Translation::ChatViaGemini { .. } if *over => {
                        chat_via_gemini::error_to_openai(b"", too_large)
                    }
                    Translation::ChatViaGemini { .. } if success => gemini_to_chat(body)
                        .unwrap_or_else(|e| {
                            chat_via_gemini::error_to_openai(
                                b"",
                                &format!("the provider's response: {e}"),
                            )
                        }),
                    Translation::ChatViaGemini { .. } => chat_via_gemini::error_to_openai(body, ""),
                    Translation::ChatViaConverse { .. } if *over => {
                        chat_via_converse::error_to_openai(500, b"", too_large)
                    }
                    Translation::ChatViaConverse { .. } if success => converse_to_chat(body, model)
                        .unwrap_or_else(|e| {
                            chat_via_converse::error_to_openai(
                                500,
                                b"",
                                &format!("the provider's response: {e}"),
                            )
                        }),
                    Translation::ChatViaConverse { .. } => {
                        chat_via_converse::error_to_openai(*status, body, "")
                    }
                    // Not reached: its translator is `Unchanged`.
                    Translation::MessagesViaVertexClaude { .. } => std::mem::take(body),
                    Translation::MessagesViaGemini { .. }
                    | Translation::MessagesViaConverse { .. }
                        if *over =>
                    {
                        error_to_anthropic(500, b"", too_large)
                    }
                    Translation::MessagesViaGemini { .. } => {
                        messages_answer(*status, gemini_to_chat(body), || {
                            chat_via_gemini::error_to_openai(body, "")
                        })
                    }
                    Translation::MessagesViaConverse { .. } => {
                        messages_answer(*status, converse_to_chat(body, model), || {
                            chat_via_converse::error_to_openai(*status, body, "")
                        })
                    }
                };
                Bytes::from(out)
            }
            Translator::Stream {
                scanner,
                stream,
                then,
            } => {
                let _ = scanner.finish(true, &mut |ev| {
                    stream.event(ev.name, ev.data);
                    crate::providers::EventKind::UsageOnly
                });
                onward(then, stream.take_output(), true)
            }
            Translator::EventStream {
                scanner,
                stream,
                then,
            } => {
                // A message cut short: the stream did not end whole.
                if !scanner.finish().is_empty() {
                    stream.corrupt();
                }
                onward(then, stream.take_output(), true)
            }
        }
    }
}

/// The `anthropic_version` Vertex AI's Claude models take (Google's docs; `AnthropicVertex`
/// sends the same).
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// A Messages request `body` as Vertex AI's Claude models take it: the model is in the path,
/// so no `model`, and an `anthropic_version` (the client's, when it set one).
fn vertex_claude_body(body: &[u8]) -> Result<Vec<u8>, Untranslatable> {
    let mut req: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::new("(body)", format!("not a JSON object: {e}")))?;
    req.remove("model");
    req.entry("anthropic_version")
        .or_insert_with(|| VERTEX_ANTHROPIC_VERSION.into());
    serde_json::to_vec(&req).map_err(|e| Untranslatable::new("(body)", e.to_string()))
}

/// The output of a stream's first leg, through its second leg if it has one.
fn onward(then: &mut Option<Box<ToMessages>>, out: Bytes, end: bool) -> Bytes {
    match then {
        Some(leg) => leg.feed(out, end),
        None => out,
    }
}

/// An Anthropic-format answer through chat: the chat answer `chat` (the first leg's reading
/// of a success) as a Messages answer, or the provider's error, read by `error_as_chat`, in
/// Anthropic's shape.
fn messages_answer(
    status: u16,
    chat: Result<Vec<u8>, String>,
    error_as_chat: impl FnOnce() -> Vec<u8>,
) -> Vec<u8> {
    if !(200..300).contains(&status) {
        return error_to_anthropic(status, &error_as_chat(), "");
    }
    chat.and_then(|c| chat_to_message(&c))
        .unwrap_or_else(|e| error_to_anthropic(500, b"", &format!("the provider's response: {e}")))
}

#[cfg(test)]
mod tests;
