//! Thin tonic adapters: request → model/store call → response. The generated code and the
//! reflection descriptor set live here too; nothing below `api` sees a protobuf type.

pub mod cdna;
pub mod codec;
pub mod consistency;
pub mod convert;
pub mod convert_cdna;
pub mod error;
pub mod grid;
pub mod health;
pub mod import;
pub mod offload;
pub mod paging;
pub mod recovering;
pub mod system;
pub mod token;
pub mod watch;

/// Generated protobuf messages and tonic services of `neurograph.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("neurograph.v1");
}

/// Encoded descriptor set of `google.rpc.BadRequest`, for reflection clients decoding details.
pub const STATUS_DETAILS_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/status_details_descriptor.bin"));

/// Encoded descriptor set of every proto file, imports included, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/neurograph_descriptor.bin"));

/// Tells long-running calls (streams) that the server is shutting down.
#[derive(Clone, Debug)]
pub struct ShutdownSignal(tokio::sync::watch::Receiver<bool>);

impl ShutdownSignal {
    /// A signal that fires when `receiver` sees `true` (or its sender is dropped).
    pub fn new(receiver: tokio::sync::watch::Receiver<bool>) -> Self {
        ShutdownSignal(receiver)
    }

    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }

    /// Whether shutdown has begun.
    pub fn is_down(&self) -> bool {
        *self.0.borrow()
    }
}
