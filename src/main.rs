//! The `neurograph` binary: parse the config, start logging, run the server.

use clap::Parser;
use neurograph::config::Config;
use neurograph::{server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::process_start();
    let config = Config::parse();
    telemetry::init_logging(config.log_format);
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
