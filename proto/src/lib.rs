//! Generated types of the adep protocol, package `adep.v1`. No logic lives here:
//! conversions to domain types belong to the node's service edge.

#![allow(missing_docs, clippy::all, unused_qualifications)]

/// Package `adep.v1`.
pub mod v1 {
    tonic::include_proto!("adep.v1");
}

/// Encoded `FileDescriptorSet` of every adep proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/adep_descriptor.bin"));

/// Protocol version announced in `Hello`: 2 since match key scheme v2 (Evaluate, then
/// Match under the answering node's own key).
pub const PROTOCOL_VERSION: u32 = 2;
