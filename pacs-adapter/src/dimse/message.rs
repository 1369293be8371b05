//! DIMSE messages and their reassembly from P-DATA-TF presentation data values (PS3.8 §9.3.5,
//! PS3.7 §6.3.1): a command set, then a data set when the command says one follows, each of
//! them spread over any number of PDVs in any number of PDUs, possibly sharing a PDU.

use std::collections::VecDeque;

use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

use super::{Command, DimseProtocolError};

/// One complete DIMSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub presentation_context_id: u8,
    pub command: Command,
    /// The data set in the transfer syntax of the presentation context, when one followed.
    pub data_set: Option<Vec<u8>>,
}

#[derive(Debug)]
enum State {
    /// Waiting for, or in the middle of, a command set.
    Command { pc_id: Option<u8>, bytes: Vec<u8> },
    /// The command is complete and announced a data set.
    DataSet { pc_id: u8, command: Command, bytes: Vec<u8> },
}

/// Reassembles messages from PDVs as they arrive. Pure state machine: feed it every PDV of every
/// P-DATA-TF PDU in order and take the messages it completes.
#[derive(Debug)]
pub struct MessageAssembler {
    state: State,
    complete: VecDeque<Message>,
    max_data_set_len: usize,
}

impl MessageAssembler {
    pub fn new(max_data_set_len: usize) -> Self {
        MessageAssembler {
            state: State::Command { pc_id: None, bytes: Vec::new() },
            complete: VecDeque::new(),
            max_data_set_len,
        }
    }

    /// True while no message is partly received, so the association is at a message boundary.
    pub fn is_idle(&self) -> bool {
        matches!(&self.state, State::Command { pc_id: None, bytes } if bytes.is_empty()) && self.complete.is_empty()
    }

    pub fn next_message(&mut self) -> Option<Message> {
        self.complete.pop_front()
    }

    pub fn push(&mut self, pdv: PDataValue) -> Result<(), DimseProtocolError> {
        let PDataValue { presentation_context_id: id, value_type, is_last, data } = pdv;
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
                if bytes.is_empty() {
                    *bytes = data;
                } else {
                    bytes.extend_from_slice(&data);
                }
                if is_last {
                    let command = Command::decode(bytes)?;
                    if command.has_data_set {
                        self.state = State::DataSet { pc_id: id, command, bytes: Vec::new() };
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
                if bytes.is_empty() {
                    *bytes = data;
                } else {
                    bytes.extend_from_slice(&data);
                }
                if is_last {
                    let state = std::mem::replace(&mut self.state, State::Command { pc_id: None, bytes: Vec::new() });
                    if let State::DataSet { pc_id, command, bytes } = state {
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
            for v in data {
                assembler.push(v).expect("valid");
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
            assembler.push(v).expect("valid");
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
            for v in values {
                result = assembler.push(v);
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
