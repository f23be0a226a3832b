//! `tollgate billing`: the provider's bill beside the ledger, in the terminal.

use tollgate::billing::reconcile::parse_group_by;
use tollgate::config::Config;
use tollgate::ledger::Store;

/// Prints the reconciliation of the UTC days `[from, to)` from the ledger database of `cfg`
/// (the bill the gateway's pollers stored), as a table or CSV.
pub async fn billing_report(
    cfg: &Config,
    from: &str,
    to: &str,
    by: &str,
    csv: bool,
) -> Result<String, String> {
    if cfg.billing.is_empty() {
        return Err("no [[billing]] sources in this config".into());
    }
    if !cfg.ledger.enabled {
        return Err("the ledger is disabled in this config ([ledger] enabled = false)".into());
    }
    let (from, to) = tollgate::server::billing::parse_days(Some(from), Some(to))?;
    let group_by = parse_group_by(by)?;
    let store = Store::connect_lazy(&cfg.ledger.url, false, cfg.ledger.write_timeout)
        .map_err(|e| e.to_string())?;
    let rec = tokio::time::timeout(
        cfg.ledger.write_timeout * 6,
        tollgate::billing::reconcile_in(
            &store,
            &cfg.billing,
            from,
            to,
            group_by,
            Some(&cfg.prices),
        ),
    )
    .await
    .map_err(|_| "the ledger database did not answer in time".to_string())?
    .map_err(|e| {
        format!(
            "{e}\n(is [ledger] url right, and has the gateway run with [[billing]]? url: {})",
            tollgate::ledger::config::redact(&cfg.ledger.url)
        )
    });
    store.close().await;
    let rec = rec?;
    Ok(if csv { rec.to_csv() } else { rec.to_table() })
}
