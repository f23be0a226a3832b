//! OpenAI chat completions from the client, Anthropic Messages upstream.

mod request;
mod response;

pub use request::chat_to_messages;
pub use response::{MessagesToChatStream, error_to_openai, message_to_chat};
