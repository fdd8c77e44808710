//! The protobuf contract of the integrations service, package `integrations.v1`:
//! generated messages, clients and servers, and the encoded file descriptor set
//! that the service serves over gRPC reflection.

/// Package `integrations.v1`.
pub mod v1 {
    tonic::include_proto!("integrations.v1");
}

/// Encoded `FileDescriptorSet` of every file under `proto/`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/integrations_descriptor.bin"));
