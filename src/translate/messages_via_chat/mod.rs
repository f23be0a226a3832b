//! Anthropic Messages from the client, OpenAI chat completions upstream.

mod request;
mod response;

pub use request::messages_to_chat;
pub use response::{ChatToMessagesStream, chat_to_message, error_to_anthropic};
