//! Message descriptors from what a registry or a file holds: `.proto` source compiled
//! with `protox` (imports of the well-known `google/protobuf/*.proto` resolved from
//! protox's copies), a base64 serialized `FileDescriptorProto` (what confluent-kafka's
//! Protobuf serializer registers, and what Apicurio returns as stored), or a
//! serialized `FileDescriptorSet` file (`protoc --descriptor_set_out`).

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, FileDescriptor, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// The name the registry's schema is compiled under (imports name other files).
const SCHEMA_FILE: &str = "registered_schema.proto";

/// One in-memory file, for protox.
struct OneFile(File);

impl FileResolver for OneFile {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == self.0.name() { Ok(self.0.clone()) } else { Err(protox::Error::file_not_found(name)) }
    }
}

/// The file a registry holds under a schema id: a base64 `FileDescriptorProto` when the
/// text is valid base64 of one, else `.proto` source.
pub fn file_from_registered(text: &str) -> Result<FileDescriptor, String> {
    let trimmed = text.trim();
    let proto = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .ok()
        .and_then(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok())
        .filter(|p| p.name.is_some() || !p.message_type.is_empty());
    let file = match proto {
        Some(mut proto) => {
            let name = proto.name.get_or_insert_with(|| SCHEMA_FILE.to_owned()).clone();
            (File::from_file_descriptor_proto(proto), name)
        }
        None => (File::from_source(SCHEMA_FILE, text).map_err(|e| e.to_string())?, SCHEMA_FILE.to_owned()),
    };
    let (file, name) = file;
    let mut resolver = ChainFileResolver::new();
    resolver.add(OneFile(file));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    compiler.descriptor_pool().get_file_by_name(&name).ok_or_else(|| format!("`{name}` did not compile"))
}

/// The message at a Confluent message-index path: the top-level message `path[0]`,
/// then its nested message `path[1]`, and so on.
pub fn message_at(file: &FileDescriptor, path: &[u32]) -> Option<MessageDescriptor> {
    let (&first, rest) = path.split_first()?;
    let mut message = file.messages().nth(first as usize)?;
    for &i in rest {
        let child = message.child_messages().nth(i as usize)?;
        message = child;
    }
    Some(message)
}

/// A registered schema's message by name (`None`: the first message of the file).
pub fn message_from_registered(text: &str, name: Option<&str>) -> Result<MessageDescriptor, String> {
    let file = file_from_registered(text)?;
    match name {
        None => file.messages().next().ok_or_else(|| "the schema has no message".to_owned()),
        Some(name) => file
            .messages()
            .find(|m| m.full_name() == name || m.name() == name)
            .ok_or_else(|| format!("no message `{name}` in the schema")),
    }
}

/// A message type from a serialized `FileDescriptorSet`, by full name.
pub fn message_from_descriptor_set(bytes: &[u8], name: &str) -> Result<MessageDescriptor, String> {
    let pool = DescriptorPool::decode(bytes).map_err(|e| format!("not a descriptor set: {e}"))?;
    pool.get_message_by_name(name).ok_or_else(|| {
        let known: Vec<String> = pool.all_messages().map(|m| m.full_name().to_owned()).take(20).collect();
        format!("no message `{name}` in the descriptor set (it has: {})", known.join(", "))
    })
}
