//! Which format a record file is in, from its first bytes, for `replay` without `--format`.

use std::io::Read;

use crate::decode::InputFormat;

use super::exit::InputError;

/// How many bytes are looked at.
const SNIFF_BYTES: usize = 64 * 1024;

/// The format of a file that starts with `head`. JSONL starts (after blank space or a UTF-8
/// byte-order mark) with `{`; a length-delimited protobuf file starts with a varint length
/// and then a field tag, never with the text `{"`. An empty file is JSONL (it has no
/// records either way).
pub fn sniff_format(head: &[u8]) -> InputFormat {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = head.iter().position(|byte| !byte.is_ascii_whitespace());
    match first.and_then(|index| head.get(index..)) {
        None => InputFormat::Jsonl,
        Some(rest) if rest.starts_with(b"{") && looks_like_json_object(rest) => InputFormat::Jsonl,
        Some(_) => InputFormat::Protobuf,
    }
}

/// Whether `text` (starting with `{`) continues like a JSON object: `}` or a quoted key
/// after optional blank space. A protobuf record of length 123 (`{`) is followed by a field
/// tag byte, which is never `"` for `IncidentEvent`'s first field.
fn looks_like_json_object(text: &[u8]) -> bool {
    text.iter()
        .skip(1)
        .find(|byte| !byte.is_ascii_whitespace())
        .is_none_or(|byte| *byte == b'"' || *byte == b'}')
}

/// The format of the file at `path`, from its first 64 KiB.
pub fn sniff_file(path: &std::path::Path) -> Result<InputFormat, InputError> {
    let file = std::fs::File::open(path).map_err(|error| InputError::from_io(path, &error))?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    file.take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|error| InputError::from_io(path, &error))?;
    Ok(sniff_format(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_jsonl_even_after_a_bom_and_blank_lines() {
        assert_eq!(sniff_format(b"{\"eventId\":\"a\"}\n"), InputFormat::Jsonl);
        assert_eq!(
            sniff_format(b"\xEF\xBB\xBF\n\n  { \"eventId\": 1 }"),
            InputFormat::Jsonl
        );
        assert_eq!(sniff_format(b""), InputFormat::Jsonl);
    }

    #[test]
    fn a_length_delimited_protobuf_event_is_protobuf() {
        use prost::Message;
        let event = crate::proto::IncidentEvent {
            event_id: "e-1".to_string(),
            ..Default::default()
        };
        let bytes = event.encode_length_delimited_to_vec();
        assert_eq!(sniff_format(&bytes), InputFormat::Protobuf);
    }

    #[test]
    fn a_record_of_length_123_is_not_mistaken_for_json() {
        let mut bytes = vec![b'{', 0x0A, 3];
        bytes.extend_from_slice(b"e-1");
        assert_eq!(sniff_format(&bytes), InputFormat::Protobuf);
    }
}
