//! OpenAI chat completions from the client, Gemini `generateContent` upstream.

mod request;
mod response;

pub use request::chat_to_gemini;
pub use response::{GeminiToChatStream, error_to_openai, gemini_to_chat};
