//! Error mapping between core and the wire lives in `sluiceway_core::wire`, shared with the
//! client so both ends of a connection read a status the same way. Re-exported here under the
//! names the broker's modules use.

pub use sluiceway_core::wire::{
    code_from_proto as from_proto, code_to_proto as to_proto, error_from_status, grpc_code, status,
    status_from_error,
};
