//! File replay I/O: reading JSONL or length-delimited protobuf files as [`SourceRecord`]s
//! ([`FileReader`], [`FileSource`]) and writing events in those formats ([`EventWriter`]).
//!
//! Framing rules:
//! - JSONL: one record per line; the position is the 1-based line number. Completely empty
//!   lines (such as the one after a trailing newline) are skipped; a line holding only
//!   whitespace is still a record, so that the pipeline dead-letters it. A trailing `"\r"` is
//!   stripped (CRLF files).
//! - Protobuf: each message is preceded by its length as a varint (prost's
//!   `encode_length_delimited`); the position is the byte offset of the length prefix. A
//!   truncated stream, a malformed varint or a length above [`MAX_PROTOBUF_MESSAGE_BYTES`]
//!   yields one [`RecordPayload::Unframed`] record carrying the rest of the input (capped at
//!   [`MAX_UNFRAMED_BYTES`]) and then the reader ends: after a framing error, nothing further
//!   in the stream can be trusted.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::{RecordPayload, Source, SourceError, SourceRecord};
use crate::decode::InputFormat;
use crate::proto::IncidentEvent;

/// Largest protobuf message length accepted from a length prefix; anything larger is treated
/// as a framing error (a corrupt prefix would otherwise make us buffer the whole file).
pub const MAX_PROTOBUF_MESSAGE_BYTES: u64 = 1024 * 1024;

/// Most bytes kept in an [`RecordPayload::Unframed`] record (dead letters stay small).
pub const MAX_UNFRAMED_BYTES: usize = 64 * 1024;

/// Read buffer size: large, since replay is throughput bound.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Write buffer size of [`EventWriter::create`].
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Longest valid varint (a `u64` needs at most 10 bytes).
const MAX_VARINT_BYTES: usize = 10;

/// An IO error on the input labelled `label`.
fn io_error(label: &str, source: std::io::Error) -> SourceError {
    SourceError::Io {
        path: label.to_string(),
        source,
    }
}

/// A synchronous iterator over the records of a JSONL or length-delimited protobuf stream.
///
/// The input is read ahead in large chunks into one buffer; [`FileReader::next_framed`] lends
/// each ordinary record straight from it (the replay decodes it there: no copy, no
/// allocation, no reference count per record), and the [`Iterator`] copies it out.
pub struct FileReader<R = File> {
    /// The input.
    inner: R,
    /// Input read ahead into `buffer[..filled]`; the rest is room for the next read (zeroed
    /// once, when the buffer grows).
    buffer: Vec<u8>,
    /// End of the bytes read into `buffer`.
    filled: usize,
    /// Bytes of `buffer` already framed; `buffer[consumed..filled]` is not framed yet.
    consumed: usize,
    /// How far past `consumed` the buffer is known to hold no newline (JSONL: a line longer
    /// than one read is not searched twice).
    searched_without_newline: usize,
    /// How records are framed and decoded.
    format: InputFormat,
    /// Label of the input for error messages (the path).
    label: String,
    /// Size of the input when known (for progress bars); 0 when unknown.
    total_bytes: u64,
    /// Bytes consumed so far (for progress bars, and the protobuf byte offset).
    bytes_read: u64,
    /// Lines consumed so far (JSONL positions).
    lines_read: u64,
    /// Set after end of input, an IO error or a framing error: the iterator is fused.
    finished: bool,
    /// Largest record: a longer JSONL line is skipped without being buffered whole and comes
    /// out as [`RecordPayload::Oversized`].
    max_record_bytes: usize,
}

/// One framed record: lent from the reader's buffer when it is an ordinary record, owned when
/// it is one of the rare kinds a dead letter needs whole (oversized, unframed).
#[derive(Debug)]
pub enum FramedRecord<'input> {
    /// Bytes to decode in `format`, valid until the next call on the reader.
    Encoded {
        /// The record's bytes, exactly as framed from the input.
        bytes: &'input [u8],
        /// How to decode them.
        format: InputFormat,
        /// Its position (see [`SourceRecord::position`]).
        position: u64,
    },
    /// Any other record.
    Owned(SourceRecord),
}

/// What framing found next in the buffer (ranges index `FileReader::buffer`).
enum Framing {
    /// An ordinary record.
    Encoded {
        range: std::ops::Range<usize>,
        position: u64,
    },
    /// A record owned outright.
    Owned(SourceRecord),
}

/// Opens `path` for reading records in `format`.
pub fn open(path: impl AsRef<Path>, format: InputFormat) -> Result<FileReader, SourceError> {
    FileReader::open(path, format)
}

impl FileReader<File> {
    /// Opens `path` for reading records in `format`.
    pub fn open(path: impl AsRef<Path>, format: InputFormat) -> Result<FileReader, SourceError> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let file = File::open(path).map_err(|source| SourceError::Io {
            path: label.clone(),
            source,
        })?;
        let total_bytes = file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|source| SourceError::Io {
                path: label.clone(),
                source,
            })?;
        let mut reader = FileReader::new(file, format, label);
        reader.total_bytes = total_bytes;
        Ok(reader)
    }
}

impl<R: Read> FileReader<R> {
    /// Reads records in `format` from any reader; `label` names it in errors. The total size is
    /// unknown (0) for a reader that is not a file.
    pub fn new(inner: R, format: InputFormat, label: impl Into<String>) -> FileReader<R> {
        FileReader {
            inner,
            buffer: Vec::new(),
            filled: 0,
            consumed: 0,
            searched_without_newline: 0,
            format,
            label: label.into(),
            total_bytes: 0,
            bytes_read: 0,
            lines_read: 0,
            finished: false,
            max_record_bytes: crate::limits::DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// The same reader with another record limit (`ingest.max_record_bytes`).
    pub fn with_max_record_bytes(mut self, max_record_bytes: usize) -> FileReader<R> {
        self.max_record_bytes = max_record_bytes.max(1);
        self
    }

    /// The input's size in bytes (0 when unknown), for a progress bar.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes consumed so far, for a progress bar.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The format records are read in.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// The next record, lent from the read-ahead buffer when it is an ordinary one; `None`
    /// after the end of input, an IO error or a framing error.
    pub fn next_framed(&mut self) -> Option<Result<FramedRecord<'_>, SourceError>> {
        if self.finished {
            return None;
        }
        let framing = match self.format {
            InputFormat::Jsonl => self.next_jsonl_record(),
            InputFormat::Protobuf => self.next_protobuf_record(),
        };
        match framing {
            Ok(Some(Framing::Encoded { range, position })) => {
                let bytes = self.buffer.get(range).unwrap_or_default();
                Some(Ok(FramedRecord::Encoded {
                    bytes,
                    format: self.format,
                    position,
                }))
            }
            Ok(Some(Framing::Owned(record))) => Some(Ok(FramedRecord::Owned(record))),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }

    /// Bytes read ahead and not framed yet.
    fn unframed_bytes(&self) -> &[u8] {
        self.buffer
            .get(self.consumed..self.filled)
            .unwrap_or_default()
    }

    /// Frames the next `length` buffered bytes as consumed; their range in the buffer.
    fn consume(&mut self, length: usize) -> std::ops::Range<usize> {
        let start = self.consumed;
        self.consumed += length;
        self.bytes_read += length as u64;
        start..self.consumed
    }

    /// Reads more input into the buffer's room; 0 at end of input. Without room, the unframed
    /// bytes (one unfinished record) first move to the front, and the buffer grows only when
    /// they fill it.
    fn read_ahead(&mut self) -> Result<usize, SourceError> {
        if self.filled >= self.buffer.len() {
            self.buffer.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
            if self.filled + READ_BUFFER_BYTES / 2 > self.buffer.len() {
                self.buffer.resize(self.filled + READ_BUFFER_BYTES, 0);
            }
        }
        loop {
            let room = self.buffer.get_mut(self.filled..).unwrap_or_default();
            match self.inner.read(room) {
                Ok(read) => {
                    let read = read.min(room.len());
                    self.filled += read;
                    return Ok(read);
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error(&self.label, error)),
            }
        }
    }

    /// Reads ahead until `wanted` unframed bytes are buffered or the input ends.
    fn buffer_at_least(&mut self, wanted: usize) -> Result<(), SourceError> {
        while self.unframed_bytes().len() < wanted {
            if self.read_ahead()? == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    fn next_jsonl_record(&mut self) -> Result<Option<Framing>, SourceError> {
        // At most the limit plus a "\r\n": a longer line is never buffered whole.
        let readable = self.max_record_bytes.saturating_add(2);
        loop {
            let Some(line) = self.next_line(readable)? else {
                return Ok(None);
            };
            self.lines_read += 1;
            let line_bytes = self.buffer.get(line.clone()).unwrap_or_default();
            let consumed = line_bytes.len();
            if !line_bytes.ends_with(b"\n") && consumed == readable {
                let prefix = Bytes::copy_from_slice(
                    line_bytes
                        .get(..self.max_record_bytes)
                        .unwrap_or(line_bytes),
                );
                let skipped = self.skip_rest_of_line()?;
                return Ok(Some(Framing::Owned(SourceRecord {
                    payload: RecordPayload::Oversized {
                        prefix,
                        total_bytes: (consumed as u64).saturating_add(skipped),
                    },
                    partition: 0,
                    position: self.lines_read,
                })));
            }
            let mut text = line_bytes;
            if let Some(without_newline) = text.strip_suffix(b"\n") {
                text = without_newline;
            }
            if let Some(without_carriage_return) = text.strip_suffix(b"\r") {
                text = without_carriage_return;
            }
            if text.is_empty() {
                continue;
            }
            if text.len() > self.max_record_bytes {
                return Ok(Some(Framing::Owned(SourceRecord {
                    payload: RecordPayload::Oversized {
                        prefix: Bytes::copy_from_slice(
                            text.get(..self.max_record_bytes).unwrap_or(text),
                        ),
                        total_bytes: text.len() as u64,
                    },
                    partition: 0,
                    position: self.lines_read,
                })));
            }
            return Ok(Some(Framing::Encoded {
                range: line.start..line.start + text.len(),
                position: self.lines_read,
            }));
        }
    }

    /// Frames the next line through its newline (or the input's last bytes) when it has at
    /// most `readable` bytes, else its first `readable` bytes; `None` at end of input.
    fn next_line(
        &mut self,
        readable: usize,
    ) -> Result<Option<std::ops::Range<usize>>, SourceError> {
        loop {
            let unframed = self.unframed_bytes();
            let searchable = unframed.len().min(readable);
            let unsearched = unframed
                .get(self.searched_without_newline..searchable)
                .unwrap_or_default();
            if let Some(newline) = memchr::memchr(b'\n', unsearched) {
                let line_bytes = self.searched_without_newline + newline + 1;
                self.searched_without_newline = 0;
                return Ok(Some(self.consume(line_bytes)));
            }
            if unframed.len() >= readable {
                self.searched_without_newline = 0;
                return Ok(Some(self.consume(readable)));
            }
            self.searched_without_newline = unframed.len();
            if self.read_ahead()? == 0 {
                self.searched_without_newline = 0;
                let rest = self.unframed_bytes().len();
                if rest == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.consume(rest)));
            }
        }
    }

    /// Consumes the rest of the current line (through its newline) without keeping it;
    /// returns the bytes skipped.
    fn skip_rest_of_line(&mut self) -> Result<u64, SourceError> {
        let mut skipped: u64 = 0;
        loop {
            let unframed = self.unframed_bytes();
            if let Some(newline) = memchr::memchr(b'\n', unframed) {
                self.consume(newline + 1);
                return Ok(skipped + newline as u64 + 1);
            }
            let length = unframed.len();
            self.consume(length);
            skipped += length as u64;
            if self.read_ahead()? == 0 {
                return Ok(skipped);
            }
        }
    }

    /// The rest of the input (capped) after a framing error, prefixed with the bytes already
    /// consumed for the broken frame; the reader ends.
    fn unframed_record(
        &mut self,
        frame_start: u64,
        mut consumed_frame_bytes: Vec<u8>,
        detail: String,
    ) -> Result<Option<Framing>, SourceError> {
        self.finished = true;
        consumed_frame_bytes.truncate(MAX_UNFRAMED_BYTES);
        let remaining_capacity = MAX_UNFRAMED_BYTES - consumed_frame_bytes.len();
        let buffered = self.unframed_bytes();
        let taken = buffered.len().min(remaining_capacity);
        consumed_frame_bytes.extend_from_slice(buffered.get(..taken).unwrap_or_default());
        self.consume(taken);
        let appended = (&mut self.inner)
            .take((remaining_capacity - taken) as u64)
            .read_to_end(&mut consumed_frame_bytes)
            .map_err(|source| io_error(&self.label, source))?;
        self.bytes_read += appended as u64;
        Ok(Some(Framing::Owned(SourceRecord {
            payload: RecordPayload::Unframed {
                bytes: Bytes::from(consumed_frame_bytes),
                format: InputFormat::Protobuf,
                detail,
            },
            partition: 0,
            position: frame_start,
        })))
    }

    fn next_protobuf_record(&mut self) -> Result<Option<Framing>, SourceError> {
        let frame_start = self.bytes_read;
        self.buffer_at_least(MAX_VARINT_BYTES)?;
        let available = self.unframed_bytes();
        if available.is_empty() {
            return Ok(None);
        }
        let mut length: u64 = 0;
        let mut prefix_length = None;
        for (index, &byte) in available.iter().take(MAX_VARINT_BYTES).enumerate() {
            let shift = 7 * index as u32;
            length |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                prefix_length = Some(index + 1);
                break;
            }
        }
        let Some(prefix_length) = prefix_length else {
            let consumed = available.len().min(MAX_VARINT_BYTES);
            let prefix_bytes = available.get(..consumed).unwrap_or_default().to_vec();
            self.consume(consumed);
            let detail = if consumed < MAX_VARINT_BYTES {
                format!(
                    "truncated length prefix at byte offset {frame_start}: input ends inside the varint"
                )
            } else {
                format!("malformed length prefix at byte offset {frame_start}: varint longer than {MAX_VARINT_BYTES} bytes")
            };
            return self.unframed_record(frame_start, prefix_bytes, detail);
        };
        if length > MAX_PROTOBUF_MESSAGE_BYTES {
            let detail = format!(
                "length prefix at byte offset {frame_start} announces {length} bytes, above the {MAX_PROTOBUF_MESSAGE_BYTES}-byte limit"
            );
            let prefix_bytes = available.get(..prefix_length).unwrap_or_default().to_vec();
            self.consume(prefix_length);
            return self.unframed_record(frame_start, prefix_bytes, detail);
        }
        // `length` is at most 1 MiB here, so it fits in usize. The prefix stays unframed until
        // the whole message is buffered (reading ahead drops framed bytes).
        let frame_length = prefix_length + length as usize;
        self.buffer_at_least(frame_length)?;
        let available = self.unframed_bytes();
        if available.len() < frame_length {
            let received = available.len() - prefix_length;
            let detail = format!(
                "truncated message at byte offset {frame_start}: length prefix announces {length} bytes, input ends after {received}"
            );
            let frame_bytes = available.to_vec();
            self.consume(available.len());
            return self.unframed_record(frame_start, frame_bytes, detail);
        }
        self.consume(prefix_length);
        Ok(Some(Framing::Encoded {
            range: self.consume(length as usize),
            position: frame_start,
        }))
    }
}

impl<R: Read> Iterator for FileReader<R> {
    type Item = Result<SourceRecord, SourceError>;

    /// The next record, owned (an ordinary record's bytes are copied out of the buffer).
    fn next(&mut self) -> Option<Self::Item> {
        let framed = self.next_framed()?;
        Some(framed.map(|framed| match framed {
            FramedRecord::Encoded {
                bytes,
                format,
                position,
            } => SourceRecord {
                payload: RecordPayload::Encoded {
                    bytes: Bytes::copy_from_slice(bytes),
                    format,
                },
                partition: 0,
                position,
            },
            FramedRecord::Owned(record) => record,
        }))
    }
}

/// A [`Source`] replaying a file through a [`FileReader`]; batches are read on tokio's blocking
/// thread pool so that file IO never stalls the async workers.
pub struct FileSource {
    /// The reader; `None` only while a batch is being read on the blocking pool (or after
    /// that task failed).
    reader: Option<FileReader>,
    /// Path, for error messages.
    path: PathBuf,
    /// A read error met after the records of the previous batch, reported on the next call.
    deferred_error: Option<SourceError>,
}

impl FileSource {
    /// Opens `path` for replay in `format`.
    pub fn open(path: impl AsRef<Path>, format: InputFormat) -> Result<FileSource, SourceError> {
        let path = path.as_ref().to_path_buf();
        let reader = FileReader::open(&path, format)?;
        Ok(FileSource {
            reader: Some(reader),
            path,
            deferred_error: None,
        })
    }

    /// The same source with another record limit (`ingest.max_record_bytes`).
    pub fn with_max_record_bytes(mut self, max_record_bytes: usize) -> FileSource {
        self.reader = self
            .reader
            .take()
            .map(|reader| reader.with_max_record_bytes(max_record_bytes));
        self
    }

    /// The file's size in bytes, for a progress bar.
    pub fn total_bytes(&self) -> u64 {
        self.reader.as_ref().map_or(0, FileReader::total_bytes)
    }

    /// Bytes consumed so far, for a progress bar.
    pub fn bytes_read(&self) -> u64 {
        self.reader.as_ref().map_or(0, FileReader::bytes_read)
    }
}

/// Reads up to `max_records` records. An error after some records were read is returned
/// beside them (the records are not lost; the error is reported on the next call).
fn read_batch(
    reader: &mut FileReader,
    max_records: usize,
) -> (Vec<SourceRecord>, Option<SourceError>) {
    let mut batch = Vec::with_capacity(max_records.min(4096));
    while batch.len() < max_records {
        match reader.next() {
            Some(Ok(record)) => batch.push(record),
            Some(Err(error)) => return (batch, Some(error)),
            None => break,
        }
    }
    (batch, None)
}

impl Source for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn next_batch(
        &mut self,
        max_records: usize,
    ) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        if let Some(error) = self.deferred_error.take() {
            return Err(error);
        }
        let Some(mut reader) = self.reader.take() else {
            return Err(SourceError::ReaderLost {
                path: self.path.display().to_string(),
            });
        };
        let max_records = max_records.max(1);
        let join_result = tokio::task::spawn_blocking(move || {
            let (batch, error) = read_batch(&mut reader, max_records);
            (reader, batch, error)
        })
        .await;
        let (reader, batch, error) = join_result.map_err(SourceError::Task)?;
        self.reader = Some(reader);
        if batch.is_empty() {
            return match error {
                Some(error) => Err(error),
                None => Ok(None),
            };
        }
        self.deferred_error = error;
        Ok(Some(batch))
    }
}

/// Writes [`IncidentEvent`]s as JSONL (proto3 JSON, one per line) or length-delimited
/// protobuf: the inputs [`FileReader`] reads.
pub struct EventWriter<W: Write = BufWriter<File>> {
    /// Destination.
    writer: W,
    /// Output format.
    format: InputFormat,
    /// Label of the destination for error messages.
    label: String,
    /// Reused protobuf encoding buffer.
    encode_buffer: Vec<u8>,
    /// Events written so far.
    events_written: u64,
}

impl EventWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes events to it in `format`.
    pub fn create(
        path: impl AsRef<Path>,
        format: InputFormat,
    ) -> Result<EventWriter<BufWriter<File>>, SourceError> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let file = File::create(path).map_err(|source| SourceError::Io {
            path: label.clone(),
            source,
        })?;
        Ok(EventWriter::new(
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            format,
            label,
        ))
    }
}

impl<W: Write> EventWriter<W> {
    /// Writes events in `format` to `writer`; `label` names it in errors.
    pub fn new(writer: W, format: InputFormat, label: impl Into<String>) -> EventWriter<W> {
        EventWriter {
            writer,
            format,
            label: label.into(),
            encode_buffer: Vec::new(),
            events_written: 0,
        }
    }

    /// Events written so far.
    pub fn events_written(&self) -> u64 {
        self.events_written
    }

    /// Writes one event.
    pub fn write(&mut self, event: &IncidentEvent) -> Result<(), SourceError> {
        self.encode_buffer.clear();
        match self.format {
            InputFormat::Jsonl => {
                serde_json::to_writer(&mut self.encode_buffer, event).map_err(|source| {
                    SourceError::Serialize {
                        event_id: event.event_id.clone(),
                        source,
                    }
                })?;
                self.encode_buffer.push(b'\n');
            }
            InputFormat::Protobuf => {
                // Encoding into a Vec only fails when the buffer lacks capacity, which a Vec
                // never does (it grows).
                event
                    .encode_length_delimited(&mut self.encode_buffer)
                    .map_err(|encode_error| SourceError::Io {
                        path: self.label.clone(),
                        source: std::io::Error::other(encode_error),
                    })?;
            }
        }
        self.writer
            .write_all(&self.encode_buffer)
            .map_err(|source| SourceError::Io {
                path: self.label.clone(),
                source,
            })?;
        self.events_written += 1;
        Ok(())
    }

    /// Flushes and returns the destination.
    pub fn finish(mut self) -> Result<W, SourceError> {
        self.writer.flush().map_err(|source| SourceError::Io {
            path: self.label.clone(),
            source,
        })?;
        Ok(self.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::EventType;
    use crate::time::millis_to_timestamp;
    use proptest::strategy::Strategy;

    fn records_of(input: &[u8], format: InputFormat) -> Vec<SourceRecord> {
        FileReader::new(input, format, "test")
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn encoded_bytes(record: &SourceRecord) -> &[u8] {
        match &record.payload {
            RecordPayload::Encoded { bytes, .. } => bytes,
            other => panic!("expected an encoded record, got {other:?}"),
        }
    }

    fn sample_event(index: u64) -> IncidentEvent {
        IncidentEvent {
            event_id: format!("event-{index}"),
            source: "test".to_string(),
            device_id: "41061100001320000001".to_string(),
            community_id: "410611001001".to_string(),
            grid_id: "41061100100101".to_string(),
            event_type: EventType::Loitering as i32,
            severity: (index % 5) as u32,
            occurred_at: Some(millis_to_timestamp(1_767_225_600_000 + index as i64)),
            received_at: Some(millis_to_timestamp(1_767_225_600_100 + index as i64)),
            lat: if index % 2 == 0 { Some(35.7) } else { None },
            lon: if index % 2 == 0 { Some(114.3) } else { None },
            crs: 0,
            attributes: [("phone".to_string(), "13800000000".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn jsonl_skips_empty_lines_but_keeps_whitespace_lines_and_strips_crlf() {
        let input = b"{\"a\":1}\r\n\n   \n{\"b\":2}\n\r\n{\"c\":3}";
        let records = records_of(input, InputFormat::Jsonl);
        let lines: Vec<(u64, &[u8])> = records
            .iter()
            .map(|record| (record.position, encoded_bytes(record)))
            .collect();
        assert_eq!(
            lines,
            vec![
                (1, &b"{\"a\":1}"[..]),
                (3, &b"   "[..]),
                (4, &b"{\"b\":2}"[..]),
                (6, &b"{\"c\":3}"[..]),
            ]
        );
    }

    #[test]
    fn a_jsonl_line_over_the_limit_is_skipped_as_oversized_and_the_next_line_is_read() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend_from_slice(b"\n{\"b\":2}\n");
        let records: Vec<SourceRecord> =
            FileReader::new(input.as_slice(), InputFormat::Jsonl, "test")
                .with_max_record_bytes(100)
                .map(Result::unwrap)
                .collect();
        assert_eq!(records.len(), 3);
        let RecordPayload::Oversized {
            prefix,
            total_bytes,
        } = &records[1].payload
        else {
            panic!("{:?}", records[1].payload);
        };
        assert_eq!(prefix.len(), 100);
        assert_eq!(*total_bytes, 10_001);
        assert_eq!(records[1].position, 2);
        assert_eq!(encoded_bytes(&records[2]), b"{\"b\":2}");
        assert_eq!(records[2].position, 3);
    }

    /// A reader that returns at most `chunk` bytes per read, as a pipe or a slow disk may.
    struct Trickle<'input> {
        input: &'input [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, target: &mut [u8]) -> std::io::Result<usize> {
            let length = self.chunk.min(target.len()).min(self.input.len());
            let (head, rest) = self.input.split_at(length);
            target[..length].copy_from_slice(head);
            self.input = rest;
            Ok(length)
        }
    }

    /// Every record with the reader's byte count after it.
    fn records_and_offsets<R: Read>(mut reader: FileReader<R>) -> Vec<(SourceRecord, u64)> {
        let mut read = Vec::new();
        while let Some(record) = reader.next() {
            read.push((record.unwrap(), reader.bytes_read()));
        }
        read
    }

    proptest::proptest! {
        #[test]
        fn records_do_not_depend_on_how_the_input_arrives(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z{}\":,]{0,40}".prop_map(String::into_bytes),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
                    proptest::prelude::Just(b"\r\n".to_vec()),
                    proptest::prelude::Just(b"\n\n".to_vec()),
                ],
                0..24,
            ),
            chunk in 1_usize..64,
            max_record_bytes in 1_usize..48,
            protobuf_events in 0_u64..6,
            cut in 0_usize..64,
        ) {
            let jsonl: Vec<u8> = pieces.concat();
            let mut writer = EventWriter::new(Vec::new(), InputFormat::Protobuf, "memory");
            for index in 0..protobuf_events {
                writer.write(&sample_event(index)).unwrap();
            }
            let mut protobuf = writer.finish().unwrap();
            protobuf.truncate(protobuf.len().saturating_sub(cut % 3 * cut));
            protobuf.extend_from_slice(&jsonl);
            for (input, format) in [(&jsonl, InputFormat::Jsonl), (&protobuf, InputFormat::Protobuf)] {
                let whole = FileReader::new(input.as_slice(), format, "test")
                    .with_max_record_bytes(max_record_bytes);
                let trickled = FileReader::new(Trickle { input, chunk }, format, "test")
                    .with_max_record_bytes(max_record_bytes);
                proptest::prop_assert_eq!(records_and_offsets(trickled), records_and_offsets(whole));
            }
        }
    }

    #[test]
    fn jsonl_trailing_newline_does_not_make_an_extra_record() {
        let records = records_of(b"{}\n{}\n", InputFormat::Jsonl);
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn protobuf_round_trips_through_event_writer_with_byte_offsets() {
        let events: Vec<IncidentEvent> = (0..50).map(sample_event).collect();
        let mut writer = EventWriter::new(Vec::new(), InputFormat::Protobuf, "memory");
        for event in &events {
            writer.write(event).unwrap();
        }
        let bytes = writer.finish().unwrap();
        let records = records_of(&bytes, InputFormat::Protobuf);
        assert_eq!(records.len(), events.len());
        let mut expected_offset = 0_u64;
        for (record, event) in records.iter().zip(&events) {
            assert_eq!(record.position, expected_offset);
            let decoded = IncidentEvent::decode(encoded_bytes(record)).unwrap();
            assert_eq!(&decoded, event);
            expected_offset += event.encoded_len() as u64
                + prost::length_delimiter_len(event.encoded_len()) as u64;
        }
        assert_eq!(expected_offset, bytes.len() as u64);
    }

    #[test]
    fn jsonl_round_trips_through_event_writer() {
        let events: Vec<IncidentEvent> = (0..20).map(sample_event).collect();
        let mut writer = EventWriter::new(Vec::new(), InputFormat::Jsonl, "memory");
        for event in &events {
            writer.write(event).unwrap();
        }
        assert_eq!(writer.events_written(), 20);
        let bytes = writer.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"eventType\":\"LOITERING\""), "{text}");
        let records = records_of(&bytes, InputFormat::Jsonl);
        let decoded: Vec<IncidentEvent> = records
            .iter()
            .map(|record| serde_json::from_slice(encoded_bytes(record)).unwrap())
            .collect();
        assert_eq!(decoded, events);
    }

    #[test]
    fn truncated_protobuf_yields_one_unframed_record_then_ends() {
        let mut writer = EventWriter::new(Vec::new(), InputFormat::Protobuf, "memory");
        writer.write(&sample_event(1)).unwrap();
        writer.write(&sample_event(2)).unwrap();
        let mut bytes = writer.finish().unwrap();
        let second_offset = sample_event(1).encode_length_delimited_to_vec().len();
        bytes.truncate(bytes.len() - 5);
        let records = records_of(&bytes, InputFormat::Protobuf);
        assert_eq!(records.len(), 2);
        assert!(matches!(records[0].payload, RecordPayload::Encoded { .. }));
        assert_eq!(records[1].position, second_offset as u64);
        match &records[1].payload {
            RecordPayload::Unframed {
                bytes: unframed,
                format,
                detail,
            } => {
                assert_eq!(*format, InputFormat::Protobuf);
                assert_eq!(&unframed[..], &bytes[second_offset..]);
                assert!(detail.contains("truncated"), "{detail}");
            }
            other => panic!("expected unframed, got {other:?}"),
        }
    }

    #[test]
    fn truncated_varint_prefix_is_unframed() {
        let records = records_of(&[0x96], InputFormat::Protobuf);
        assert_eq!(records.len(), 1);
        assert!(matches!(
            &records[0].payload,
            RecordPayload::Unframed { detail, .. } if detail.contains("varint")
        ));
    }

    #[test]
    fn oversize_length_prefix_is_unframed_with_capped_bytes_and_ends() {
        let mut input = Vec::new();
        prost::encoding::encode_varint(MAX_PROTOBUF_MESSAGE_BYTES + 1, &mut input);
        input.extend(std::iter::repeat_n(0x08_u8, 200 * 1024));
        let records = records_of(&input, InputFormat::Protobuf);
        assert_eq!(records.len(), 1);
        match &records[0].payload {
            RecordPayload::Unframed { bytes, detail, .. } => {
                assert_eq!(bytes.len(), MAX_UNFRAMED_BYTES);
                assert!(detail.contains("limit"), "{detail}");
            }
            other => panic!("expected unframed, got {other:?}"),
        }
    }

    #[test]
    fn overlong_varint_is_unframed() {
        let input = [0xff_u8; 16];
        let records = records_of(&input, InputFormat::Protobuf);
        assert_eq!(records.len(), 1);
        assert!(matches!(
            &records[0].payload,
            RecordPayload::Unframed { bytes, .. } if bytes.len() == 16
        ));
    }

    #[test]
    fn empty_input_has_no_records() {
        assert!(records_of(b"", InputFormat::Protobuf).is_empty());
        assert!(records_of(b"", InputFormat::Jsonl).is_empty());
    }

    #[test]
    fn zero_length_protobuf_message_is_an_empty_record() {
        let records = records_of(&[0x00, 0x00], InputFormat::Protobuf);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].position, 1);
        assert!(encoded_bytes(&records[0]).is_empty());
    }

    #[test]
    fn file_reader_reports_progress_and_file_source_reads_batches() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("events.pb");
        let mut writer = EventWriter::create(&path, InputFormat::Protobuf).unwrap();
        for index in 0..25 {
            writer.write(&sample_event(index)).unwrap();
        }
        writer.finish().unwrap();
        let mut reader = open(&path, InputFormat::Protobuf).unwrap();
        let total = reader.total_bytes();
        assert!(total > 0);
        assert_eq!(reader.bytes_read(), 0);
        assert_eq!(reader.by_ref().count(), 25);
        assert_eq!(reader.bytes_read(), total);

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let batch_sizes = runtime.block_on(async {
            let mut source = FileSource::open(&path, InputFormat::Protobuf).unwrap();
            assert_eq!(source.name(), "file");
            let mut sizes = Vec::new();
            while let Some(batch) = source.next_batch(10).await.unwrap() {
                sizes.push(batch.len());
            }
            sizes
        });
        assert_eq!(batch_sizes, vec![10, 10, 5]);
    }

    #[test]
    fn opening_a_missing_file_is_an_io_error() {
        let error = FileReader::open("/nonexistent/gridwatch/events.jsonl", InputFormat::Jsonl)
            .err()
            .unwrap();
        assert!(matches!(error, SourceError::Io { .. }));
    }
}
