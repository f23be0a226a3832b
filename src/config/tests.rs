use std::collections::HashMap;

use super::*;

fn vars() -> HashMap<String, String> {
    [
        ("OPENAI_API_KEY".to_string(), "sk-real".to_string()),
        ("APP_KEY".to_string(), "tg-app-secret".to_string()),
    ]
    .into()
}

const GOOD: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
api_key = "${OPENAI_API_KEY}"
model_prefixes = ["gpt-", "o"]

[[providers]]
name = "vllm"
kind = "openai-compatible"
base_url = "http://127.0.0.1:8000/v1"
models = ["*"]

[[models]]
name = "fast"
provider = "openai"
upstream_model = "gpt-4o-mini"
price = { input = "0.15", output = "0.60" }

[[prices]]
model = "llama3.2"
input = "0.01"
output = "0.02"

[[keys]]
name = "app"
key = "${APP_KEY}"
team = "search"
"#;

#[test]
fn a_valid_config_routes_and_authenticates() {
    let cfg = Config::from_toml(GOOD, &vars()).expect("valid");
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(
        cfg.router.route("gpt-4o").map(|r| r.provider.name()),
        Some("openai")
    );
    assert_eq!(
        cfg.router.route("o4-mini").map(|r| r.provider.name()),
        Some("openai")
    );
    assert_eq!(
        cfg.router.route("llama3.2").map(|r| r.provider.name()),
        Some("vllm")
    );
    let fast = cfg.router.route("fast").expect("alias");
    assert_eq!(fast.upstream_model.as_deref(), Some("gpt-4o-mini"));
    assert!(cfg.prices.lookup("llama3.2").is_some());
    let key = cfg
        .keys
        .authenticate(Some("tg-app-secret"))
        .expect("known key");
    assert_eq!((&*key.name, &*key.team), ("app", "search"));
    assert!(cfg.keys.authenticate(Some("tg-wrong")).is_none());
    assert!(cfg.keys.authenticate(None).is_none());
    assert!(!cfg.keys.is_open());
}

#[test]
fn a_key_removed_from_a_rebuilt_config_stops_working_at_once() {
    let before = Config::from_toml(GOOD, &vars()).expect("valid");
    for _ in 0..3 {
        // Twice and more: the second comes from this thread's cache of authenticated keys.
        let key = before.keys.authenticate(Some("tg-app-secret"));
        assert_eq!(key.map(|k| k.team.clone()).as_deref(), Some("search"));
    }
    // The same key under another team, and then no longer configured: the cache answers only
    // for the store that filled it.
    let moved = Config::from_toml(
        &GOOD.replace("team = \"search\"", "team = \"ads\""),
        &vars(),
    )
    .expect("valid");
    let key = moved.keys.authenticate(Some("tg-app-secret"));
    assert_eq!(key.map(|k| k.team.clone()).as_deref(), Some("ads"));
    let mut other = vars();
    other.insert("APP_KEY".into(), "tg-another-secret".into());
    let after = Config::from_toml(GOOD, &other).expect("valid");
    assert!(after.keys.authenticate(Some("tg-app-secret")).is_none());
    assert!(after.keys.authenticate(Some("tg-another-secret")).is_some());
    // The old store still knows its own key (a request already under way keeps its gateway).
    assert!(before.keys.authenticate(Some("tg-app-secret")).is_some());
}

#[test]
fn without_keys_the_gateway_is_open_as_team_default() {
    let text = "[[providers]]\nname = \"v\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [\"*\"]\n";
    let cfg = Config::from_toml(text, &vars()).expect("valid");
    assert!(cfg.keys.is_open());
    assert_eq!(&*cfg.keys.authenticate(None).expect("open").team, "default");
}

#[test]
fn every_error_is_reported_with_its_key_path() {
    let bad = r#"
[server]
listen = "not-an-address"

[metrics]
labels = ["model", "colour"]

[[providers]]
name = "openai"
kind = "openai"
api_key = "${MISSING_KEY}"
models = ["gpt-4o"]

[[providers]]
name = "x"
kind = "gemini-ultra"
models = ["a"]

[[providers]]
name = "compat"
kind = "openai-compatible"
models = ["b"]

[[models]]
name = "alias"
provider = "nope"

[[prices]]
model = "m"
input = "1.1234567"
output = "1"

[[keys]]
name = "k"
key = "short"
team = ""
"#;
    let errs = Config::from_toml(bad, &vars()).err().expect("invalid").0;
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "server.listen",
        "metrics.labels[1]",
        "providers[0].api_key",
        "providers[1].kind",
        "providers[2].base_url",
        "models[0].provider",
        "prices[0]",
        "keys[0].team",
        "keys[0].key",
    ] {
        assert!(
            paths.contains(&expected),
            "missing error for {expected}: {errs:?}"
        );
    }
    let api = errs
        .iter()
        .find(|e| e.path == "providers[0].api_key")
        .expect("api_key error");
    assert!(api.message.contains("MISSING_KEY"), "{}", api.message);
}

#[test]
fn unknown_fields_and_type_errors_are_rejected_with_location() {
    let errs = Config::from_toml("[server]\nlisten = 5\n", &vars())
        .err()
        .expect("invalid")
        .0;
    assert!(
        errs[0].message.contains("server") || errs[0].message.contains("listen"),
        "{errs:?}"
    );
    let errs = Config::from_toml("[server]\nlistne = \"x\"\n", &vars())
        .err()
        .expect("invalid")
        .0;
    assert!(errs[0].message.contains("listne"), "{errs:?}");
}

#[test]
fn ledger_secrets_come_from_the_environment_and_errors_have_paths() {
    let text = format!(
        "{GOOD}\n[ledger]\nurl = \"postgres://tollgate:${{APP_KEY}}@db/tollgate\"\nadmin_token = \"${{OPENAI_API_KEY}}-admin\"\n"
    );
    let cfg = Config::from_toml(&text, &vars()).expect("valid");
    assert_eq!(
        cfg.ledger.url,
        "postgres://tollgate:tg-app-secret@db/tollgate"
    );
    assert_eq!(cfg.ledger.admin_token.as_deref(), Some("sk-real-admin"));
    let defaults = Config::from_toml(GOOD, &vars()).expect("valid");
    assert_eq!(defaults.ledger.url, "sqlite://tollgate.db");

    let text = format!(
        "{GOOD}\n[ledger]\nurl = \"${{NO_SUCH_VAR}}\"\nmetrics_window = \"week\"\nflush_ms = 5\n"
    );
    let err = Config::from_toml(&text, &vars())
        .err()
        .expect("unknown key");
    assert!(err.to_string().contains("flush_ms"), "{err}");
    let text = format!("{GOOD}\n[ledger]\nurl = \"${{NO_SUCH_VAR}}\"\nmetrics_window = \"week\"\n");
    let err = Config::from_toml(&text, &vars()).err().expect("invalid");
    let paths: Vec<_> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"ledger.url"), "{err}");
    assert!(paths.contains(&"ledger.metrics_window"), "{err}");
}

#[test]
fn server_connection_limits_have_defaults_and_are_checked() {
    let cfg = Config::from_toml(GOOD, &vars()).expect("valid");
    let s = &cfg.server;
    assert_eq!(s.header_timeout, Duration::from_secs(5));
    assert_eq!(s.idle_timeout, Duration::from_secs(75));
    assert_eq!(s.body_timeout, Duration::from_secs(60));
    assert!(s.max_connections >= 16);
    assert_eq!(s.max_connections_per_ip, None);

    let text = format!(
        "[server]\nheader_timeout_secs = 2\nidle_timeout_secs = 9\nbody_timeout_secs = 30\nmax_connections = 100\nmax_connections_per_ip = 10\n{GOOD}"
    );
    let s = Config::from_toml(&text, &vars()).expect("valid").server;
    assert_eq!(
        (s.header_timeout, s.idle_timeout, s.body_timeout),
        (
            Duration::from_secs(2),
            Duration::from_secs(9),
            Duration::from_secs(30)
        )
    );
    assert_eq!(
        (s.max_connections, s.max_connections_per_ip),
        (100, Some(10))
    );

    let bad = format!(
        "[server]\nheader_timeout_secs = 0\nidle_timeout_secs = 100000\nbody_timeout_secs = 0\nmax_connections = 10\nmax_connections_per_ip = 11\n{GOOD}"
    );
    let errs = Config::from_toml(&bad, &vars()).err().expect("invalid").0;
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "server.header_timeout_secs",
        "server.idle_timeout_secs",
        "server.body_timeout_secs",
        "server.max_connections_per_ip",
    ] {
        assert!(paths.contains(&p), "missing error for {p}: {errs:?}");
    }
    let zero = format!("[server]\nmax_connections = 0\n{GOOD}");
    let errs = Config::from_toml(&zero, &vars()).err().expect("invalid").0;
    assert_eq!(errs[0].path, "server.max_connections");
}

#[test]
fn the_default_connection_cap_leaves_a_descriptor_per_upstream_connection() {
    assert_eq!(validate::default_max_connections(Some(1024)), 480);
    assert_eq!(validate::default_max_connections(Some(20_000)), 9968);
    assert_eq!(validate::default_max_connections(Some(u64::MAX)), 65_536);
    assert_eq!(validate::default_max_connections(Some(10)), 16);
    assert_eq!(validate::default_max_connections(None), 4096);
}

#[test]
fn names_longer_than_the_label_bound_are_refused() {
    let long = "k".repeat(40);
    let text = format!(
        "[metrics]\nmax_label_value_bytes = 32\n{GOOD}\n[[keys]]\nname = \"{long}\"\nkey = \"tg-another-secret\"\nteam = \"search\"\n"
    );
    let errors = match Config::from_toml(&text, &vars()) {
        Err(e) => e.0,
        Ok(_) => panic!("a 40-byte key name over a 32-byte bound is refused"),
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "keys[1].name");
    let cfg = Config::from_toml(GOOD, &vars()).expect("valid");
    assert_eq!(cfg.metrics.options.max_label_value_bytes, 128);
    let bad = format!("[metrics]\nmax_label_value_bytes = 8\n{GOOD}");
    assert!(Config::from_toml(&bad, &vars()).is_err());
}

#[test]
fn the_usage_plausibility_bound_is_configurable_and_checked() {
    let cfg = Config::from_toml(GOOD, &vars()).expect("valid");
    assert_eq!(cfg.metering.max_tokens_per_request, 10_000_000);
    let text = format!("[metering]\nmax_tokens_per_request = 2000000\n{GOOD}");
    let cfg = Config::from_toml(&text, &vars()).expect("valid");
    assert_eq!(cfg.metering.max_tokens_per_request, 2_000_000);
    for bad in ["0", "18446744073709551615"] {
        let text = format!("[metering]\nmax_tokens_per_request = {bad}\n{GOOD}");
        let errors = match Config::from_toml(&text, &vars()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{bad} is refused"),
        };
        assert!(errors.contains("max_tokens_per_request"), "{errors}");
    }
}

#[test]
fn forwarded_headers_are_checked_with_their_paths() {
    let text = r#"
[[providers]]
name = "openai"
kind = "openai"
api_key = "sk"
models = ["gpt-4o"]
forward_headers = ["openai-beta", "Authorization", "anthropic-beta", "x-tollgate-customer", "bad header"]
anthropic_beta = ["x"]

[[providers]]
name = "anthropic"
kind = "anthropic"
api_key = "sk-ant"
models = ["claude-sonnet-4-5"]
anthropic_beta = ["interleaved-thinking-2025-05-14", "a,b"]
"#;
    let errors = match Config::from_toml(text, &vars()) {
        Err(e) => e.0,
        Ok(_) => panic!("invalid"),
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "providers[0].forward_headers[1]",
            "providers[0].forward_headers[2]",
            "providers[0].forward_headers[3]",
            "providers[0].forward_headers[4]",
            "providers[0].anthropic_beta",
            "providers[1].anthropic_beta[1]",
        ],
        "{errors:?}"
    );
}

const SIM_KEY: &str = r#"
[[keys]]
name = "app"
key = "tg-app-secret"
team = "search"
"#;

fn errors_of(text: &str) -> Vec<ConfigError> {
    Config::from_toml(text, &vars()).err().expect("invalid").0
}

#[test]
fn a_provider_that_failed_reports_no_follow_on_errors() {
    let text = format!(
        r#"
[[providers]]
name = "openai"
kind = "openai"
api_key = "${{TOLLGATE_TEST_UNSET_KEY}}"
models = ["gpt-4o"]

[[models]]
name = "fast"
provider = "openai"
upstream_model = "gpt-4o-mini"

[[models]]
name = "typo"
provider = "opneai"
{SIM_KEY}"#
    );
    let errs = errors_of(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    // The missing variable, and the alias to a provider that really is not there; nothing
    // about `fast`, whose provider exists but failed for its own reason.
    assert_eq!(
        paths,
        ["providers[0].api_key", "models[1].provider"],
        "{errs:?}"
    );
    assert!(
        errs[0].message.contains("TOLLGATE_TEST_UNSET_KEY"),
        "{errs:?}"
    );
}

#[test]
fn a_bad_base_url_is_quoted_as_written_with_what_is_expected() {
    for (url, why) in [
        ("api.openai.com/v1", "no http:// or https://"),
        ("ftp://example.com/v1", "the scheme must be http or https"),
        ("http://", "not a URL"),
        ("https://example.com/v1?x=1", "a query string"),
    ] {
        let text = format!(
            "[[providers]]\nname = \"vllm\"\nkind = \"openai-compatible\"\nbase_url = \"{url}\"\nmodels = [\"*\"]\n{SIM_KEY}"
        );
        let errs = errors_of(&text);
        assert_eq!(errs.len(), 1, "{url}: {errs:?}");
        assert_eq!(errs[0].path, "providers[0].base_url");
        let m = &errs[0].message;
        assert!(m.starts_with(&format!("{url:?} is not a base URL")), "{m}");
        assert!(
            m.contains(why) && m.contains("https://api.openai.com/v1"),
            "{m}"
        );
        // Not the URL with an endpoint path appended, which the user never wrote.
        assert!(!m.contains("/chat/completions"), "{m}");
    }
}

#[test]
fn a_team_no_key_belongs_to_is_a_warning_naming_the_key_teams() {
    let text = format!(
        "[[providers]]\nname = \"vllm\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodels = [\"*\"]\n{SIM_KEY}\n[[teams]]\nname = \"serach\"\nbudget = {{ usd = 10, period = \"day\" }}\n\n[[teams]]\nname = \"search\"\n"
    );
    let cfg = Config::from_toml(&text, &vars()).expect("valid, with a warning");
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert_eq!(cfg.warnings[0].path, "teams[0].name");
    let m = &cfg.warnings[0].message;
    assert!(
        m.contains("\"serach\"") && m.contains("teams of the keys: search"),
        "{m}"
    );
    assert!(
        Config::from_toml(GOOD, &vars())
            .expect("valid")
            .warnings
            .is_empty()
    );
}

#[test]
fn a_provider_used_only_through_aliases_needs_no_models_list() {
    let text = format!(
        "[[providers]]\nname = \"openai\"\nkind = \"openai\"\napi_key = \"sk-x\"\n\n[[models]]\nname = \"fast\"\nprovider = \"openai\"\nupstream_model = \"gpt-4o-mini\"\n{SIM_KEY}"
    );
    let cfg = Config::from_toml(&text, &vars()).expect("valid");
    let fast = cfg.router.route("fast").expect("alias");
    assert_eq!(fast.provider.name(), "openai");
    assert!(cfg.router.route("gpt-4o").is_none());
    // With neither a models list nor an alias, the provider still serves nothing: an error.
    let errs = errors_of(&format!(
        "[[providers]]\nname = \"openai\"\nkind = \"openai\"\napi_key = \"sk-x\"\n{SIM_KEY}"
    ));
    assert_eq!(errs[0].path, "providers[0].models", "{errs:?}");
}

#[test]
fn cache_section_is_validated_with_key_paths() {
    let ok = format!(
        "[cache]\nmode = \"semantic\"\nbackend = \"redis://127.0.0.1:6379\"\n[cache.semantic]\nembeddings_model = \"text-embedding-3-small\"\n{GOOD}"
    );
    let c = Config::from_toml(&ok, &vars()).expect("valid");
    let cache = c.cache.expect("on");
    assert_eq!(cache.mode, crate::cache::config::Mode::Semantic);
    assert_eq!(cache.scope, crate::cache::config::Scope::Team);
    assert!(c.metrics.options.cache && c.metrics.options.semantic);
    assert!(
        Config::from_toml(GOOD, &vars())
            .expect("valid")
            .cache
            .is_none()
    );

    let bad = format!(
        "[cache]\nmode = \"fuzzy\"\nscope = \"world\"\nttl_secs = 0\nbackend = \"memcached\"\ndeterministic = \"maybe\"\n{GOOD}"
    );
    let paths: Vec<String> = errors_of(&bad).into_iter().map(|e| e.path).collect();
    for p in [
        "cache.mode",
        "cache.scope",
        "cache.ttl_secs",
        "cache.backend",
        "cache.deterministic",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} in {paths:?}");
    }
    let no_section = format!("[cache]\nmode = \"semantic\"\n{GOOD}");
    assert!(
        errors_of(&no_section)
            .iter()
            .any(|e| e.path == "cache.semantic")
    );
    let unrouted = format!(
        "[cache]\nmode = \"semantic\"\n[cache.semantic]\nembeddings_model = \"nomic-embed\"\n{}",
        GOOD.replace("models = [\"*\"]", "models = [\"llama3.2\"]")
    );
    let paths: Vec<String> = errors_of(&unrouted).into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["cache.semantic.embeddings_model"]);
    let threshold = ok.replace(
        "embeddings_model = \"text-embedding-3-small\"",
        "embeddings_model = \"text-embedding-3-small\"\nsimilarity_threshold = 1.5",
    );
    let paths: Vec<String> = errors_of(&threshold).into_iter().map(|e| e.path).collect();
    assert_eq!(paths, ["cache.semantic.similarity_threshold"]);
}

#[test]
fn every_kind_is_known_and_its_own_keys_are_checked() {
    let errs = errors_of(&format!(
        "[[providers]]\nname = \"x\"\nkind = \"bedrockk\"\nmodels = [\"*\"]\n{SIM_KEY}"
    ));
    assert!(
        errs.iter().any(|e| e.path == "providers[0].kind"
            && e.message.contains("azure-openai")
            && e.message.contains("gemini")),
        "{errs:?}"
    );
    // A key of another kind is an error at the entry, naming the key.
    let errs = errors_of(&format!(
        "[[providers]]\nname = \"g\"\nkind = \"gemini\"\napi_key = \"k\"\nmodels = [\"*\"]\ninject_stream_usage = false\n{SIM_KEY}"
    ));
    assert!(
        errs.iter()
            .any(|e| e.path == "providers[0]" && e.message.contains("inject_stream_usage")),
        "{errs:?}"
    );
    let errs = errors_of(&format!(
        "[[providers]]\nname = \"az\"\nkind = \"azure-openai\"\napi_key = \"k\"\nmodels = [\"*\"]\n{SIM_KEY}"
    ));
    assert!(
        errs.iter().any(|e| e.path == "providers[0].base_url"),
        "{errs:?}"
    );
    let errs = errors_of(&format!(
        "[[providers]]\nname = \"az\"\nkind = \"azure-openai\"\nbase_url = \"https://r.openai.azure.com\"\napi_key = \"k\"\nmodels = [\"*\"]\n{SIM_KEY}"
    ));
    assert!(
        errs.iter().any(|e| e.path == "providers[0].api_version"),
        "{errs:?}"
    );
}

#[test]
fn azure_deployments_are_priced_as_their_base_model() {
    let text = format!(
        r#"
[[providers]]
name = "azure"
kind = "azure-openai"
base_url = "https://res.openai.azure.com"
api_key = "az"
api_version = "2024-10-21"

[[models]]
name = "gpt-4o"
provider = "azure"
deployment = "gpt4o-prod-eastus"
base_model = "gpt-4o-2024-11-20"

[[prices]]
model = "my-base"
input = "1"
output = "2"

[[models]]
name = "cheap"
provider = "azure"
deployment = "cheap-dep"
base_model = "my-base"
{SIM_KEY}"#
    );
    let c = Config::from_toml(&text, &vars()).expect("valid");
    let route = c.router.route("gpt-4o").expect("routed");
    assert_eq!(route.upstream_model.as_deref(), Some("gpt4o-prod-eastus"));
    let base = c
        .prices
        .lookup("gpt-4o-2024-11-20")
        .expect("catalog")
        .clone();
    let usage = crate::metering::Usage {
        input: 1000,
        output: 100,
        ..Default::default()
    };
    for name in ["gpt-4o", "gpt4o-prod-eastus"] {
        let p = c.prices.lookup(name).expect("priced");
        assert_eq!(p.cost_nanos(&usage), base.cost_nanos(&usage), "{name}");
    }
    // A base model from [[prices]] (read after [[models]]).
    let p = c.prices.lookup("cheap-dep").expect("priced");
    assert_eq!(p.cost_nanos(&usage), 1000 * 1000 + 100 * 2000);
    let errs = errors_of(&format!(
        r#"
[[providers]]
name = "openai"
kind = "openai"
api_key = "k"

[[models]]
name = "m"
provider = "openai"
deployment = "d"
base_model = "no-such-model"
{SIM_KEY}"#
    ));
    assert!(
        errs.iter().any(|e| e.path == "models[0].deployment")
            && errs.iter().any(|e| e.path == "models[0].base_model"),
        "{errs:?}"
    );
}
