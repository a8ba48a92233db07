//! The command line: `serve`, `check-config`, `reload`,
//! `app-password create|list|show|rotate|revoke`, `store backup|copy`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config
//! (clap's own usage errors exit 2 as well).

pub mod app_password;
pub mod check_config;
pub mod reload;
pub mod serve;
pub mod store;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, StoreConfig};
use crate::store::{Store, StoreError};
use crate::tls::Tls;
use crate::upstream::UpstreamError;

#[derive(Debug, Parser)]
#[command(
    name = "passgate",
    version,
    about = "App-password authentication gateway for Git and API servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        long,
        global = true,
        env = "PASSGATE_CONFIG",
        default_value = "proxy.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config; print the routes in match order; warn on shadowed
    /// rules and on rules whose trailing slash gets their requests refused.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Treat a warning (shadowed rule, refused trailing slash) as an error.
        #[arg(long)]
        strict: bool,
    },
    /// Make the running server re-read its config file (as SIGHUP does) and
    /// say whether it applied it; a refused file changes nothing.
    Reload {
        /// Finds the admin socket; the server re-reads the file it was started with.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Manage app passwords.
    #[command(subcommand)]
    AppPassword(AppPasswordCommand),
    /// Operate on the store as a whole.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum AppPasswordCommand {
    /// Create an app password; it is printed once, on the first line of stdout.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// The user it belongs to: the user name clients send with it.
        #[arg(long)]
        user: String,
        /// What it is for ("laptop", "ci"): unique among the user's active passwords.
        #[arg(long)]
        name: String,
        /// A scope declared in the config's scopes table; repeat for several (an unknown one lists the known).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// Lifetime, e.g. "90d", "12h" (required when `[auth] max_lifetime` is set).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expires_in: Option<DurationArg>,
        /// Limit the password to a repository, OWNER/NAME or OWNER/*; repeat for several.
        #[arg(long = "repo", value_name = "OWNER/NAME")]
        repos: Vec<String>,
        /// Limit the password to client addresses in a CIDR block; repeat for several.
        #[arg(long = "allow-from", value_name = "CIDR")]
        allow_from: Vec<String>,
        /// Print one JSON object (id, password, user, name, scopes, times) instead.
        #[arg(long)]
        json: bool,
    },
    /// List app passwords (never a secret).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this user's passwords.
        #[arg(long)]
        user: Option<String>,
        /// Only passwords with this status.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        /// Only active passwords that stop working within this time, e.g. "7d".
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expiring: Option<DurationArg>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one app password (never its secret): limits, last addresses, lineage.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The password's id (the part of the password before its secret).
        id: String,
        /// Print one JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// Replace an app password by a new one with the same user, name, scopes
    /// and limits; the new one is printed once, like `create`.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        /// The id of the password to replace.
        id: String,
        /// Lifetime of the new password (default: the old one's).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expires_in: Option<DurationArg>,
        /// Keep the old password working this long (default: revoked at once).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        grace: Option<DurationArg>,
        /// Print one JSON object (like `create --json`) instead.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one app password by id, or all of a user's with --user U --all.
    // Two forms, so clap's usage shows exactly those (#20): `revoke ID`, or
    // `revoke --user U --all`; any mix is a usage error (exit 2).
    #[command(
        override_usage = "passgate app-password revoke [OPTIONS] <ID>\n       \
                                passgate app-password revoke [OPTIONS] --user <USER> --all"
    )]
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The app password's id: the 12 characters after `pgap_`, as `list` shows.
        #[arg(required_unless_present_any = ["all", "user"], conflicts_with_all = ["all", "user"])]
        id: Option<String>,
        /// With --all: the user whose active app passwords are all revoked.
        #[arg(long, requires = "all")]
        user: Option<String>,
        /// With --user: revoke every active app password of that user.
        #[arg(long, requires = "user")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write a consistent copy of the redb store to FILE (a new file), while
    /// `serve` runs (through its admin socket) or not. Restore: stop the
    /// server and put the copy in place of the store file.
    Backup {
        #[command(flatten)]
        config: ConfigArg,
        /// The copy to write; an existing file is never overwritten.
        file: PathBuf,
    },
    /// Copy every app password into a PostgreSQL database (e.g. the redb
    /// file into the database several gateways will share).
    Copy {
        #[command(flatten)]
        config: ConfigArg,
        /// The database: postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=… (password,
        /// port and sslmode optional).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Replace the app passwords the database already holds.
        #[arg(long)]
        force: bool,
    },
}

/// The value of a duration option (`--expires-in`, `--expiring`, `--grace`):
/// "90d", "12h", parsed as `proxy.toml` durations are. Its options take
/// `allow_hyphen_values`, so that "-1d" gets the parser's own message rather
/// than clap's "unexpected argument".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub std::time::Duration);

impl std::str::FromStr for DurationArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::config::parse_duration(s).map(DurationArg)
    }
}

/// `list --status`: the statuses `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    Active,
    Expired,
    Revoked,
}

impl StatusFilter {
    /// The `status` text of a listed row this filter keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "active",
            StatusFilter::Expired => "expired",
            StatusFilter::Revoked => "revoked",
        }
    }
}

/// What a command failed with, and which exit code that deserves.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: bad usage or bad config.
    Usage(String),
    /// Exit 1: the command could not do its work.
    Runtime(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) => m,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

/// Loads the config named by `--config` / `$PASSGATE_CONFIG`.
pub fn load(arg: &ConfigArg) -> Result<Config, Failure> {
    Ok(Config::load(&arg.config)?)
}

/// The `[server.tls]` certificate and key, read and paired as `serve`
/// serves them (`None` without TLS). A file that cannot be used is a bad
/// config (exit 2): `check-config` calls this too, so it is caught before
/// a start.
pub fn load_tls(config: &Config) -> Result<Option<Tls>, Failure> {
    let Some(files) = &config.server.tls else {
        return Ok(None);
    };
    Tls::load(files)
        .map(Some)
        .map_err(|e| Failure::Usage(format!("{}: server.tls: {e}", config.file.display())))
}

/// An upstream whose client cannot be built (its `ca_file` unreadable or
/// holding no certificate) is a bad config (exit 2).
/// `file`: the config that names it.
pub fn upstream_failure(file: &std::path::Path, e: &UpstreamError) -> Failure {
    Failure::Usage(format!("{}: {e}", file.display()))
}

/// Opens the store the config names: the redb file or the PostgreSQL database.
pub fn open_store(config: &Config) -> Result<Store, StoreError> {
    match &config.store {
        StoreConfig::Redb { path } => Store::open(path),
        StoreConfig::Postgres { url } => Store::connect(url),
    }
}

/// [`open_store`] for a command with no server running. The command has no
/// logger, so when opening migrated an older redb store, where the copy taken
/// before went is said on stderr (as `serve` logs it).
pub fn open_store_offline(config: &Config) -> Result<Store, StoreError> {
    let store = open_store(config)?;
    if let Some(copy) = store.migrated() {
        eprintln!("passgate: note: {copy}");
    }
    Ok(store)
}

/// A store error for the terminal: the error, the file it concerns when that
/// is not already said, and the cause of an unreachable or failing database.
pub fn store_message(config: &Config, e: &StoreError) -> String {
    match (e, &config.store) {
        (StoreError::UnknownSchema { .. }, StoreConfig::Redb { path }) => {
            format!("{}: {e}", path.display())
        }
        (
            StoreError::Unreachable { .. }
            | StoreError::Database { .. }
            | StoreError::DatabaseTls { .. },
            _,
        ) => {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            msg
        }
        _ => e.to_string(),
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::CheckConfig { config, strict } => check_config::run(&config, strict),
        Command::Reload { config } => reload::run(&config),
        Command::AppPassword(cmd) => app_password::run(cmd),
        Command::Store(cmd) => store::run(cmd),
    }
}
