//! The `neurograph` binary: parse the config, start logging, run the server (or restore a
//! backup with `neurograph restore BACKUP`, or probe a running server with
//! `neurograph healthcheck`).

use clap::Parser;
use neurograph::config::{Action, Config};
use neurograph::store::durable::restore_backup;
use neurograph::{server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::process_start();
    let config = Config::parse();
    telemetry::init_logging(config.log_format);
    match &config.action {
        Some(Action::Restore {
            backup,
            discard_existing,
        }) => return restore(backup, &config.data_dir, *discard_existing),
        Some(Action::Healthcheck(args)) => return healthcheck(args, &config).await,
        None => {}
    }
    tracing::info!(?config, "starting neurograph {}", env!("CARGO_PKG_VERSION"));
    server::fd_limit::raise_and_log(config.max_connections);
    let signal = match server::termination_signal() {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!("cannot install SIGTERM/SIGINT handlers: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot listen on {}: {e}", config.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    match server::serve(config, listener, signal).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `neurograph healthcheck`: prints the status (or why there is none) and exits 0 only for
/// SERVING.
async fn healthcheck(
    args: &neurograph::config::HealthcheckArgs,
    config: &Config,
) -> std::process::ExitCode {
    match neurograph::healthcheck::check(args, config.listen, &config.access).await {
        Ok(status) => {
            println!("{}", status.as_str_name());
            if status == tonic_health::ServingStatus::Serving.into() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(why) => {
            eprintln!("healthcheck failed: {why}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `neurograph restore BACKUP`: puts a backup in place of the store in `--data-dir`.
fn restore(
    backup: &std::path::Path,
    data_dir: &std::path::Path,
    discard_existing: bool,
) -> std::process::ExitCode {
    match restore_backup(backup, data_dir, discard_existing) {
        Ok(kept) => {
            if let Some(kept) = kept {
                tracing::info!("the previous store was moved to {}", kept.display());
            }
            tracing::info!(
                "restored {} into {}; start the server on it",
                backup.display(),
                data_dir.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("restore failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
