//! Format translation: a client of one API format calling a model whose provider speaks
//! another. Today: OpenAI chat completions (`/v1/chat/completions`, plain and streamed, tools
//! and images) served by an Anthropic Messages provider.
//!
//! The request is translated before it is sent; the response and its stream after the tap has
//! metered them, so metering always reads the provider's native usage (the tap parses the
//! upstream's format) and the client gets its own format. What cannot be translated faithfully
//! is refused with a 400 naming the field, never dropped silently.
//!
//! Translation builds `serde_json::Value`s: it costs more than the byte-splicing pass-through
//! (one parse and one serialisation of the request, each response event parsed twice), and is
//! only ever used for requests that need it.

mod chat_to_messages;
mod messages_to_chat;

use bytes::Bytes;

use crate::providers::Endpoint;
use crate::proxy::sse::SseScanner;

pub use chat_to_messages::chat_to_messages;
pub use messages_to_chat::{MessagesToChatStream, error_to_openai, message_to_chat};

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
}

impl Translation {
    /// The translation that lets a provider serving `served` endpoints answer `endpoint`, if
    /// there is one.
    pub fn between(endpoint: Endpoint, serves: impl Fn(Endpoint) -> bool) -> Option<Translation> {
        match endpoint {
            Endpoint::ChatCompletions if serves(Endpoint::Messages) => {
                Some(Translation::ChatViaMessages)
            }
            _ => None,
        }
    }

    /// The endpoint called upstream.
    pub fn upstream_endpoint(self) -> Endpoint {
        match self {
            Translation::ChatViaMessages => Endpoint::Messages,
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
        }
    }

    /// The translator of the response: `status` and whether the upstream streams SSE;
    /// `include_usage`: the client asked for the final usage chunk.
    pub fn response(self, status: u16, sse: bool, include_usage: bool) -> Translator {
        match self {
            Translation::ChatViaMessages if sse && (200..300).contains(&status) => {
                Translator::Stream {
                    scanner: SseScanner::new(MAX_EVENT_BYTES),
                    stream: Box::new(MessagesToChatStream::new(include_usage)),
                }
            }
            Translation::ChatViaMessages => Translator::Whole {
                body: Vec::new(),
                success: (200..300).contains(&status),
                over: false,
            },
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
    /// A whole body (a message or an error), translated at its end.
    Whole {
        body: Vec<u8>,
        success: bool,
        /// The body outgrew [`MAX_EVENT_BYTES`]: answered with an error at its end.
        over: bool,
    },
    /// An SSE stream, translated event by event.
    Stream {
        scanner: SseScanner,
        stream: Box<MessagesToChatStream>,
    },
}

impl Translator {
    /// The client's bytes for the next upstream bytes (possibly none yet).
    pub fn feed(&mut self, data: Bytes) -> Bytes {
        match self {
            Translator::Whole { body, over, .. } => {
                if body.len() + data.len() > MAX_EVENT_BYTES {
                    *over = true;
                } else {
                    body.extend_from_slice(&data);
                }
                Bytes::new()
            }
            Translator::Stream { scanner, stream } => {
                let passed = scanner.feed(data, true, &mut |ev| {
                    stream.event(ev.name, ev.data);
                    crate::providers::EventKind::UsageOnly
                });
                // Only an event over the bound passes the scanner untranslated: drop it (the
                // client could not parse it either) and say so at the end.
                if !passed.is_empty() {
                    stream.lost_event();
                }
                stream.take_output()
            }
        }
    }

    /// The client's last bytes, once the upstream body ended.
    pub fn finish(&mut self) -> Bytes {
        match self {
            Translator::Whole {
                body,
                success,
                over,
            } => {
                let out = if *over {
                    error_to_openai(b"", "the provider's response is too large to translate")
                } else if *success {
                    message_to_chat(body).unwrap_or_else(|e| {
                        error_to_openai(b"", &format!("the provider's response: {e}"))
                    })
                } else {
                    error_to_openai(body, "")
                };
                Bytes::from(out)
            }
            Translator::Stream { scanner, stream } => {
                let _ = scanner.finish(true, &mut |ev| {
                    stream.event(ev.name, ev.data);
                    crate::providers::EventKind::UsageOnly
                });
                stream.take_output()
            }
        }
    }
}

#[cfg(test)]
mod tests;
