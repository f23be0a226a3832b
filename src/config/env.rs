//! `${VAR}` and `${VAR:-default}` in config values, so secrets stay out of the file.

/// Where variables come from (the process environment, or a map in tests).
pub trait Vars {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Vars for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Replaces every `${VAR}` / `${VAR:-default}` in `value`; `$$` is a literal `$`.
pub fn interpolate(value: &str, vars: &dyn Vars) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {value:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("{name:?} is not a valid environment variable name"));
            }
            match (vars.get(name), default) {
                (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
                (Some(v), None) => out.push_str(&v),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn resolves_variables_defaults_and_escapes() {
        let vars: HashMap<String, String> = [("KEY".to_string(), "sk-1".to_string())].into();
        assert_eq!(interpolate("${KEY}", &vars).as_deref(), Ok("sk-1"));
        assert_eq!(
            interpolate("Bearer ${KEY}!", &vars).as_deref(),
            Ok("Bearer sk-1!")
        );
        assert_eq!(interpolate("${NOPE:-x}", &vars).as_deref(), Ok("x"));
        assert_eq!(interpolate("$${KEY}", &vars).as_deref(), Ok("${KEY}"));
        assert_eq!(
            interpolate("plain $ sign", &vars).as_deref(),
            Ok("plain $ sign")
        );
        assert!(
            interpolate("${NOPE}", &vars)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(interpolate("${KEY", &vars).is_err());
    }
}
