//! `tollgate prices show | check | import`: the price table from the terminal.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use tollgate::config::Config;
use tollgate::metering::PriceTable;
use tollgate::metering::price_import;
use tollgate::metering::price_table::PriceFile;

/// The `prices` subcommands.
#[derive(Subcommand)]
pub enum PricesCommand {
    /// Print every price of a model (rates, context tiers, service tiers, fees, dates) and
    /// where it came from: the config's overrides when `--config` names a file, else the
    /// built-in tables.
    Show {
        /// The model id, as the provider reports it or as clients send it.
        model: String,
        /// A config file whose `[[prices]]` and `[[models]]` prices apply over the built-in ones.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a price file (the format of `prices/prices.toml`), or the built-in tables.
    Check {
        /// The file; without it the built-in tables are checked.
        file: Option<PathBuf>,
    },
    /// Convert another gateway's price list into a price file.
    Import {
        /// `litellm`: LiteLLM's `model_prices_and_context_window.json` (in the `litellm`
        /// wheel as `model_prices_and_context_window_backup.json`).
        #[arg(long, default_value = "litellm")]
        format: String,
        /// The file to read.
        file: PathBuf,
        /// Write the price file here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keep only these `litellm_provider` values (prefixes), comma-separated.
        #[arg(long, default_value = "")]
        providers: String,
        /// The date of the source, written as the file's `as_of` (default: today, UTC).
        #[arg(long)]
        as_of: Option<String>,
        /// The source named in the file's header and `sources`.
        #[arg(long)]
        source: Option<String>,
    },
}

/// Runs one `prices` subcommand; errors are one line for the user.
pub fn run(cmd: PricesCommand) -> Result<(), String> {
    match cmd {
        PricesCommand::Show { model, config } => {
            let table = match config {
                Some(path) => Config::load(&path).map_err(|e| e.to_string())?.prices,
                None => PriceTable::builtin()?,
            };
            match table.describe(&model) {
                Some(text) => {
                    print!("{text}");
                    Ok(())
                }
                None => Err(format!(
                    "no price for {model:?} (looked up as written, without a date suffix and \
                     without a vendor/ prefix); add a [[prices]] entry"
                )),
            }
        }
        PricesCommand::Check { file } => check(file.as_deref()),
        PricesCommand::Import {
            format,
            file,
            out,
            providers,
            as_of,
            source,
        } => {
            if format != "litellm" {
                return Err(format!("unknown format {format:?}; supported: litellm"));
            }
            let json =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let providers: Vec<String> = providers
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
            let imported = price_import::import_litellm(&json, &providers)?;
            let as_of = as_of.unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
            let source = source.unwrap_or_else(|| file.display().to_string());
            let text = price_import::to_toml(&imported, &as_of, &source);
            // What is written must read back as a table.
            PriceTable::from_toml(&text)
                .map_err(|e| format!("the import does not read back: {e}"))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => print!("{text}"),
            }
            eprint!("{}", price_import::report(&imported));
            Ok(())
        }
    }
}

fn check(file: Option<&Path>) -> Result<(), String> {
    let Some(path) = file else {
        let t = PriceTable::builtin()?;
        println!(
            "built-in prices: OK ({} model ids; hand-checked as of {}, catalog as of {})",
            t.len(),
            t.as_of(),
            t.catalog_as_of()
        );
        return Ok(());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = PriceFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = PriceTable::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "{}: OK ({} entries, {} model ids, as of {})",
        path.display(),
        parsed.models.len(),
        t.len(),
        parsed.as_of
    );
    Ok(())
}
