//! A gRPC client that knows no .proto file: it asks the server's reflection service for the
//! descriptors and calls methods with dynamic messages, JSON in and JSON out — what grpcurl does.

use bytes::Buf;
use futures::StreamExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
    transport::Channel,
    Status,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

pub struct ReflectionClient {
    channel: Channel,
    pool: DescriptorPool,
}

impl ReflectionClient {
    /// Connects and loads the descriptors of every service the server lists.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(url.to_string())?.connect().await?;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let services =
            match reflect(&mut reflection, MessageRequest::ListServices(String::new())).await? {
                MessageResponse::ListServicesResponse(list) => {
                    list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                }
                other => anyhow::bail!("unexpected reflection answer {other:?}"),
            };
        let mut pool = DescriptorPool::new();
        for service in services {
            let answer = reflect(
                &mut reflection,
                MessageRequest::FileContainingSymbol(service),
            )
            .await?;
            let MessageResponse::FileDescriptorResponse(files) = answer else {
                anyhow::bail!("unexpected reflection answer");
            };
            let protos = files
                .file_descriptor_proto
                .iter()
                .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()))
                .collect::<Result<Vec<_>, _>>()?;
            // Files already known (shared dependencies) are skipped by name.
            let fresh: Vec<_> = protos
                .into_iter()
                .filter(|f| pool.get_file_by_name(f.name()).is_none())
                .collect();
            pool.add_file_descriptor_protos(fresh)?;
        }
        Ok(Self { channel, pool })
    }

    pub fn services(&self) -> Vec<String> {
        self.pool
            .services()
            .map(|s| s.full_name().to_string())
            .collect()
    }

    /// Calls `package.Service/Method` with a JSON request and metadata; answers JSON.
    pub async fn call(
        &self,
        method: &str,
        request: serde_json::Value,
        metadata: &[(&str, &str)],
    ) -> Result<serde_json::Value, Status> {
        let (service, name) = method
            .rsplit_once('/')
            .ok_or_else(|| Status::invalid_argument("method"))?;
        let method: MethodDescriptor = self
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .ok_or_else(|| {
                Status::unimplemented(format!("{service}/{name} not found by reflection"))
            })?;
        let message = DynamicMessage::deserialize(method.input(), request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut request = tonic::Request::new(message);
        for (key, value) in metadata {
            let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes())
                .map_err(|_| Status::invalid_argument("metadata key"))?;
            let value: MetadataValue<_> = value
                .parse()
                .map_err(|_| Status::invalid_argument("metadata"))?;
            request.metadata_mut().insert(key, value);
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::try_from(format!("/{}/{}", service, name))
            .map_err(|_| Status::invalid_argument("path"))?;
        let response = grpc
            .unary(request, path, DynamicCodec(method.output()))
            .await?
            .into_inner();
        serde_json::to_value(&response).map_err(|e| Status::internal(e.to_string()))
    }
}

async fn reflect(
    client: &mut ServerReflectionClient<Channel>,
    request: MessageRequest,
) -> anyhow::Result<MessageResponse> {
    let outbound = futures::stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut inbound = client.server_reflection_info(outbound).await?.into_inner();
    let answer = inbound
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no reflection answer"))??;
    answer
        .message_response
        .ok_or_else(|| anyhow::anyhow!("empty reflection answer"))
}

/// Encodes and decodes dynamic messages of one output type.
struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.0.clone())
    }
}

struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.0.clone(), bytes)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
