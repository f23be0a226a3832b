//! OpenAI chat message content (a string or `text` / `image_url` parts) as the parts of
//! another format whose text parts are `{"text": ...}` (Gemini's `parts`, Converse's content
//! blocks); each format builds its own image part.

use serde_json::{Value, json};

use super::Untranslatable;

/// `content` as text parts and, where `images`, the parts `image` builds from `image_url`
/// parts. An empty string is no part at all: Gemini and Converse refuse blank text (clients
/// send `""` beside tool calls).
pub fn text_parts(
    content: &Value,
    at: &str,
    images: bool,
    image: fn(&Value, &str) -> Result<Value, Untranslatable>,
) -> Result<Vec<Value>, Untranslatable> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let at = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            Untranslatable::new(format!("{at}.text"), "is required")
                        })?;
                        Ok(json!({ "text": t }))
                    }
                    Some("image_url") if images => image(p, &at),
                    other => Err(Untranslatable::new(
                        format!("{at}.type"),
                        format!("content part {other:?} has no equivalent here"),
                    )),
                }
            })
            .collect(),
        _ => Err(Untranslatable::new(at, "must be a string or content parts")),
    }
}

/// The media type and base64 data of an `image_url` part's `data:` URL; `models` names the
/// provider's models in the refusal of any other URL.
pub fn data_url<'a>(
    part: &'a Value,
    at: &str,
    models: &str,
) -> Result<(&'a str, &'a str), Untranslatable> {
    let field = || format!("{at}.image_url.url");
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(field(), "is required"))?;
    url.strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
        .ok_or_else(|| {
            Untranslatable::new(
                field(),
                format!("{models} models take images inline only: a base64 data: URL"),
            )
        })
}
