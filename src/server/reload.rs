//! SIGHUP: read the certificate, key, client CA, keys file and JWT secret again and put them
//! in force for the next handshake and the next call, without touching open connections. All
//! or nothing: when any file fails, everything stays as it was and the log says why.

use std::sync::Arc;

use crate::auth::layer::LiveCredentials;
use crate::auth::Credentials;
use crate::config::AccessConfig;

use super::tls::{self, LiveTls, TlsFiles};

/// What a reload reads and where it puts it.
pub struct Reloader {
    access: AccessConfig,
    credentials: LiveCredentials,
    tls: Option<(TlsFiles, LiveTls)>,
}

impl Reloader {
    /// Reloads what `access` names into `credentials` and `tls`.
    pub fn new(
        access: AccessConfig,
        credentials: LiveCredentials,
        tls: Option<(TlsFiles, LiveTls)>,
    ) -> Reloader {
        Reloader {
            access,
            credentials,
            tls,
        }
    }

    /// Reads every file again; swaps them in only if all of them are good.
    pub fn reload(&self) -> Result<(), String> {
        let credentials = Credentials::load(&self.access).map_err(|e| e.to_string())?;
        let tls = match &self.tls {
            Some((files, _)) => Some(tls::load(files).map_err(|e| e.to_string())?),
            None => None,
        };
        if let (Some((_, live)), Some(config)) = (&self.tls, tls) {
            live.store(config);
        }
        self.credentials.store(Arc::new(credentials));
        Ok(())
    }

    /// Installs the SIGHUP handler now (a SIGHUP before that would end the process) and
    /// reloads on every SIGHUP, in a task, until `stop` resolves.
    pub fn start(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                tracing::warn!("cannot install the SIGHUP handler; no reloads: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    received = hangup.recv() => if received.is_none() { return },
                }
                match self.reload() {
                    Ok(()) => tracing::info!(
                        tls = self.tls.is_some(),
                        keys = self.credentials.load().key_count(),
                        "SIGHUP: reloaded TLS material and credentials"
                    ),
                    Err(e) => tracing::error!(
                        "SIGHUP: reload failed; keeping the previous TLS material and credentials: {e}"
                    ),
                }
            }
        });
    }
}
