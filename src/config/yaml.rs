//! Reading the files the exporter is configured by: at most [`MAX_FILE_BYTES`], checked by a
//! first pass (`yaml_scan`) before serde reads them, every error naming its field.

use std::path::Path;

use super::MAX_FILE_BYTES;
use super::yaml_scan;

/// Reads a file the exporter is configured by, refusing one over [`MAX_FILE_BYTES`] before
/// reading it all: by its size when it has one, and by reading at most one byte more.
pub fn read_limited(path: &Path) -> Result<String, ReadError> {
    use std::io::Read as _;
    let too_large = |size: String| {
        ReadError::Invalid(
            "(file)".into(),
            format!("{size} bytes, over the limit of {MAX_FILE_BYTES} (1 MiB, what a Kubernetes ConfigMap holds)"),
        )
    };
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let metadata = file.metadata().map_err(ReadError::Io)?;
    if metadata.is_file() && metadata.len() > MAX_FILE_BYTES as u64 {
        return Err(too_large(metadata.len().to_string()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(format!("more than {MAX_FILE_BYTES}")));
    }
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
    })
}

/// Why [`read_limited`] returned no text.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// It was refused: (field, reason), as from [`parse_yaml`].
    Invalid(String, String),
}

/// Parses YAML into `T`; an error names the field it is about, as `(field path, reason)`.
/// Shared by every file the exporter reads, so they all report mistakes the same way, and all
/// have the same limits: at most [`MAX_FILE_BYTES`], nesting at most
/// [`MAX_DEPTH`](yaml_scan::MAX_DEPTH) deep and at most
/// [`MAX_NODES`](yaml_scan::MAX_NODES) values once aliases are expanded, checked by a
/// linear pass before serde starts.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    if text.len() > MAX_FILE_BYTES {
        return Err(("(file)".into(), format!("{} bytes, over the limit of {MAX_FILE_BYTES} (1 MiB)", text.len())));
    }
    yaml_scan::check(text)?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = match path.as_str() {
            "." => "(top level)".to_owned(),
            // An empty key: name it as written, so the error still points at something.
            "" => "\"\"".to_owned(),
            p if p.ends_with('.') => format!("{p}\"\""),
            _ => path,
        };
        let location = e.inner().location();
        let message = e.into_inner().to_string();
        // yaml_serde may start its message with a (shorter) path of its own; say it once.
        let mut message = match message.split_once(": ") {
            Some((head, rest)) if field.starts_with(head) => rest.to_owned(),
            _ => message,
        };
        // yaml_serde leaves out the position when it is the very start of the file (an
        // unknown key on the first line, say); every other error has one, so this one too.
        if let Some(at) = location.filter(|l| l.line() == 1 && l.column() == 1)
            && !message.contains(" at line ")
        {
            message.push_str(&format!(" at line {} column {}", at.line(), at.column()));
        }
        (field, message)
    })
}
