//! The `neurograph` binary: parse the config, start logging, run the server (or restore a
//! backup with `neurograph restore BACKUP`).

use clap::Parser;
use neurograph::config::{Action, Config};
use neurograph::store::durable::restore_backup;
use neurograph::{server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::process_start();
    let config = Config::parse();
    telemetry::init_logging(config.log_format);
    if let Some(Action::Restore {
        backup,
        discard_existing,
    }) = &config.action
    {
        return restore(backup, &config.data_dir, *discard_existing);
    }
    tracing::info!(?config, "starting neurograph {}", env!("CARGO_PKG_VERSION"));
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
