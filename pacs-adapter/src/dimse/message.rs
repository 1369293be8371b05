//! DIMSE messages and their reassembly from P-DATA-TF presentation data values (PS3.8 §9.3.5,
//! PS3.7 §6.3.1): a command set, then a data set when the command says one follows, each of
//! them spread over any number of PDVs in any number of PDUs, possibly sharing a PDU.
//!
//! An instance (the data set of a C-STORE-RQ) is gathered into one buffer with room kept in
//! front of it, sized by the previous instance of the association (a series' instances are
//! mostly the same size): the Part-10 framing it leaves this crate in, and a de-identified
//! front in place of its own, are written there, so that its pixel data is copied once
//! between the PDUs and the bytes a client is sent.

use std::collections::VecDeque;
use std::ops::Deref;

use bytes::Bytes;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

use crate::incoming::Pdv;

use super::{Command, CommandField, DimseProtocolError};

/// Room kept in front of an instance's data set: a preamble and file meta group of ours
/// (`crate::part10::file_meta`, about 500 bytes with every UID at its longest), and what
/// de-identification adds to the elements before the pixel data (a few hundred bytes).
pub const ROOM_IN_FRONT: usize = 4096;

/// The most an instance's buffer is sized in advance by the previous one; past it, it grows.
const MOST_RESERVED: usize = 64 * 1024 * 1024;

/// One complete DIMSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub presentation_context_id: u8,
    pub command: Command,
    /// The data set in the transfer syntax of the presentation context, when one followed.
    pub data_set: Option<DataSetBuffer>,
}

/// A received data set, and the room kept in front of it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataSetBuffer {
    bytes: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for DataSetBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataSetBuffer({} bytes, {} in front)", self.len(), self.start)
    }
}

impl DataSetBuffer {
    pub(crate) fn with_room(room: usize, expected: usize) -> Self {
        let mut bytes = Vec::with_capacity(room + expected);
        bytes.resize(room, 0);
        DataSetBuffer { bytes, start: room }
    }

    #[cfg(test)]
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// `head` followed by the data set, in one buffer: written into the room in front when it
    /// fits (no copy of the data set), else copied. Returns the buffer from its first byte
    /// (what room is left comes first) and where `head` starts in it.
    pub fn prepend(mut self, head: &[u8]) -> (Bytes, usize) {
        let Some(from) = self.start.checked_sub(head.len()) else {
            let mut out = Vec::with_capacity(head.len() + self.len());
            out.extend_from_slice(head);
            out.extend_from_slice(&self);
            return (Bytes::from(out), 0);
        };
        self.bytes[from..self.start].copy_from_slice(head);
        // Capacity left over by a size guessed too large is given back, not kept in a cache.
        if self.bytes.capacity() - self.bytes.len() > self.bytes.len() / 8 {
            self.bytes.shrink_to_fit();
        }
        (Bytes::from(self.bytes), from)
    }
}

impl From<Vec<u8>> for DataSetBuffer {
    fn from(bytes: Vec<u8>) -> Self {
        DataSetBuffer { bytes, start: 0 }
    }
}

impl Deref for DataSetBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for, or in the middle of, a command set.
    Command { pc_id: Option<u8>, bytes: Vec<u8> },
    /// The command is complete and announced a data set.
    DataSet { pc_id: u8, command: Command, bytes: DataSetBuffer },
}

/// Reassembles messages from PDVs as they arrive. Pure state machine: feed it every PDV of every
/// P-DATA-TF PDU in order and take the messages it completes.
#[derive(Debug)]
pub struct MessageAssembler {
    state: State,
    complete: VecDeque<Message>,
    max_data_set_len: usize,
    /// The length of the last instance received, to size the next one's buffer.
    last_instance_len: usize,
}

impl MessageAssembler {
    pub fn new(max_data_set_len: usize) -> Self {
        MessageAssembler {
            state: State::Command { pc_id: None, bytes: Vec::new() },
            complete: VecDeque::new(),
            max_data_set_len,
            last_instance_len: 0,
        }
    }

    /// True while no message is partly received, so the association is at a message boundary.
    pub fn is_idle(&self) -> bool {
        matches!(&self.state, State::Command { pc_id: None, bytes } if bytes.is_empty()) && self.complete.is_empty()
    }

    pub fn next_message(&mut self) -> Option<Message> {
        self.complete.pop_front()
    }

    /// Takes the next PDV (borrowed from the PDU it arrived in: its bytes are copied once, into
    /// the message).
    pub fn push(&mut self, pdv: Pdv<'_>) -> Result<(), DimseProtocolError> {
        let Pdv { presentation_context_id: id, value_type, is_last, data } = pdv;
        match (&mut self.state, value_type) {
            (State::Command { pc_id, bytes }, PDataValueType::Command) => {
                if let Some(expected) = *pc_id {
                    if expected != id {
                        return Err(DimseProtocolError::PresentationContextSwitch { expected, got: id });
                    }
                }
                *pc_id = Some(id);
                if bytes.len() + data.len() > super::command::MAX_COMMAND_SET_LEN {
                    return Err(DimseProtocolError::CommandTooLarge(bytes.len() + data.len()));
                }
                bytes.extend_from_slice(data);
                if is_last {
                    let command = Command::decode(bytes)?;
                    if command.has_data_set {
                        let bytes = if command.field == CommandField::CStoreRq {
                            let expected = self.last_instance_len.min(self.max_data_set_len).min(MOST_RESERVED);
                            DataSetBuffer::with_room(ROOM_IN_FRONT, expected)
                        } else {
                            DataSetBuffer::from(Vec::new())
                        };
                        self.state = State::DataSet { pc_id: id, command, bytes };
                    } else {
                        self.complete.push_back(Message { presentation_context_id: id, command, data_set: None });
                        self.state = State::Command { pc_id: None, bytes: Vec::new() };
                    }
                }
                Ok(())
            }
            (State::Command { .. }, PDataValueType::Data) => Err(DimseProtocolError::DataBeforeCommand),
            (State::DataSet { .. }, PDataValueType::Command) => Err(DimseProtocolError::CommandDuringDataSet),
            (State::DataSet { pc_id, bytes, .. }, PDataValueType::Data) => {
                if *pc_id != id {
                    return Err(DimseProtocolError::PresentationContextSwitch { expected: *pc_id, got: id });
                }
                if bytes.len() + data.len() > self.max_data_set_len {
                    return Err(DimseProtocolError::DataSetTooLarge(self.max_data_set_len));
                }
                bytes.bytes.extend_from_slice(data);
                if is_last {
                    let state = std::mem::replace(&mut self.state, State::Command { pc_id: None, bytes: Vec::new() });
                    if let State::DataSet { pc_id, command, bytes } = state {
                        if command.field == CommandField::CStoreRq {
                            self.last_instance_len = bytes.len();
                        }
                        self.complete.push_back(Message {
                            presentation_context_id: pc_id,
                            command,
                            data_set: Some(bytes),
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

/// Splits an outgoing message into P-DATA-TF PDUs of one PDV each, no PDU larger than the
/// peer's maximum PDU length (`max_pdu_length` counts the PDU's variable part, as negotiated).
/// Yields lazily so a large data set is never copied whole into PDUs.
pub fn pdus<'a>(
    presentation_context_id: u8,
    command: &'a [u8],
    data_set: Option<&'a [u8]>,
    max_pdu_length: u32,
) -> impl Iterator<Item = Pdu> + 'a {
    // PDU variable part = 4-byte PDV length + 1-byte context id + 1-byte header + data.
    let max_fragment = (max_pdu_length as usize).saturating_sub(6).clamp(1024, 4 * 1024 * 1024);
    let fragments = move |bytes: &'a [u8], value_type: PDataValueType| {
        let chunk_count = bytes.len().div_ceil(max_fragment).max(1);
        (0..chunk_count).map(move |i| {
            let start = i * max_fragment;
            let end = (start + max_fragment).min(bytes.len());
            Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id,
                    value_type: value_type.clone(),
                    is_last: i + 1 == chunk_count,
                    data: bytes[start..end].to_vec(),
                }],
            }
        })
    };
    fragments(command, PDataValueType::Command)
        .chain(data_set.into_iter().flat_map(move |d| fragments(d, PDataValueType::Data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::CommandField;

    fn pdv(id: u8, value_type: PDataValueType, is_last: bool, data: &[u8]) -> PDataValue {
        PDataValue { presentation_context_id: id, value_type, is_last, data: data.to_vec() }
    }

    fn feed_all(assembler: &mut MessageAssembler, pdus: impl Iterator<Item = Pdu>) {
        for pdu in pdus {
            let Pdu::PData { data } = pdu else { panic!("not P-DATA") };
            for v in &data {
                assembler.push(v.into()).expect("valid");
            }
        }
    }

    #[test]
    fn reassembles_split_messages_in_any_fragmentation() {
        let store = Command::c_store_rq(5, "1.2.840.10008.5.1.4.1.1.2", "1.2.3");
        let command = store.encode();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for max_pdu in [1030u32, 4096, 16_384, 1 << 20] {
            let mut assembler = MessageAssembler::new(1 << 20);
            feed_all(&mut assembler, pdus(3, &command, Some(&data), max_pdu));
            let message = assembler.next_message().expect("complete");
            assert_eq!(message.presentation_context_id, 3);
            assert_eq!(message.command, store);
            assert_eq!(message.data_set.as_deref(), Some(&data[..]));
            assert!(assembler.is_idle());
        }
    }

    #[test]
    fn an_instance_is_framed_in_the_room_kept_in_front_of_it() {
        let store = Command::c_store_rq(5, "1.2.840.10008.5.1.4.1.1.2", "1.2.3").encode();
        let mut assembler = MessageAssembler::new(1 << 20);
        let mut receive = |data: &[u8]| {
            feed_all(&mut assembler, pdus(1, &store, Some(data), 16_384));
            assembler.next_message().and_then(|m| m.data_set).expect("instance")
        };
        let first: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(&receive(&first)[..], &first[..]);
        // The next instance's buffer was sized by the first: gathered without growing, and
        // framed where it lies.
        let second = vec![1u8; 299_000];
        let data_set = receive(&second);
        assert!(data_set.bytes.capacity() >= ROOM_IN_FRONT + first.len());
        let head = [7u8; 500];
        let data_at = data_set.as_ptr();
        let (buffer, from) = data_set.prepend(&head);
        assert_eq!(from, ROOM_IN_FRONT - 500);
        let framed = buffer.slice(from..);
        assert_eq!(&framed[..500], &head[..]);
        assert_eq!(&framed[500..], &second[..]);
        assert_eq!(framed[500..].as_ptr(), data_at);

        // A head larger than the room is still put in front, by a copy.
        let buffer = DataSetBuffer::from(b"data".to_vec());
        assert_eq!(buffer.prepend(b"head"), (Bytes::from_static(b"headdata"), 0));
    }

    #[test]
    fn a_data_set_of_another_command_has_no_room_kept() {
        let find = Command::query_rq(CommandField::CFindRq, "1.2.840.10008.5.1.4.1.2.2.1", 2).encode();
        let mut assembler = MessageAssembler::new(1024);
        feed_all(&mut assembler, pdus(1, &find, Some(b"identifier"), 16_384));
        let data_set = assembler.next_message().and_then(|m| m.data_set).expect("identifier");
        assert_eq!(data_set.start, 0);
        assert_eq!(data_set.bytes.capacity(), b"identifier".len());
    }

    #[test]
    fn command_and_data_in_one_pdu_and_back_to_back_messages() {
        let echo = Command::c_echo_rq(1).encode();
        let find = Command::query_rq(CommandField::CFindRq, "1.2.840.10008.5.1.4.1.2.2.1", 2).encode();
        let mut assembler = MessageAssembler::new(1024);
        // One PDU holding: a whole echo, a find command in two halves, and its data set.
        let (a, b) = find.split_at(10);
        for v in [
            pdv(1, PDataValueType::Command, true, &echo),
            pdv(3, PDataValueType::Command, false, a),
            pdv(3, PDataValueType::Command, true, b),
            pdv(3, PDataValueType::Data, true, b"identifier"),
        ] {
            assembler.push((&v).into()).expect("valid");
        }
        let first = assembler.next_message().expect("echo");
        assert_eq!(first.command.field, CommandField::CEchoRq);
        assert_eq!(first.data_set, None);
        let second = assembler.next_message().expect("find");
        assert_eq!(second.command.field, CommandField::CFindRq);
        assert_eq!(second.data_set.as_deref(), Some(&b"identifier"[..]));
        assert!(assembler.next_message().is_none());
    }

    #[test]
    fn rejects_protocol_violations() {
        let store = Command::c_store_rq(5, "1.2.840.10008.5.1.4.1.1.2", "1.2.3").encode();
        let cases: Vec<(&str, Vec<PDataValue>, DimseProtocolError)> = vec![
            ("data first", vec![pdv(1, PDataValueType::Data, true, b"x")], DimseProtocolError::DataBeforeCommand),
            (
                "command while data expected",
                vec![pdv(1, PDataValueType::Command, true, &store), pdv(1, PDataValueType::Command, true, &store)],
                DimseProtocolError::CommandDuringDataSet,
            ),
            (
                "context switch",
                vec![pdv(1, PDataValueType::Command, true, &store), pdv(3, PDataValueType::Data, true, b"x")],
                DimseProtocolError::PresentationContextSwitch { expected: 1, got: 3 },
            ),
            (
                "data set too large",
                vec![
                    pdv(1, PDataValueType::Command, true, &store),
                    pdv(1, PDataValueType::Data, false, &[0; 600]),
                    pdv(1, PDataValueType::Data, true, &[0; 600]),
                ],
                DimseProtocolError::DataSetTooLarge(1000),
            ),
        ];
        for (name, values, want) in cases {
            let mut assembler = MessageAssembler::new(1000);
            let mut result = Ok(());
            for v in &values {
                result = assembler.push(v.into());
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(want), "{name}");
        }
    }

    #[test]
    fn empty_data_set_is_one_pdv() {
        let command = Command::c_echo_rq(1).encode();
        let all: Vec<Pdu> = pdus(1, &command, Some(&[]), 16_384).collect();
        assert_eq!(all.len(), 2);
    }
}
