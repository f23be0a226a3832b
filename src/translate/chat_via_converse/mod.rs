//! OpenAI chat completions from the client, Bedrock `Converse` / `ConverseStream` upstream.

mod request;
mod response;

pub use request::chat_to_converse;
pub use response::{ConverseToChatStream, converse_to_chat, error_to_openai};
