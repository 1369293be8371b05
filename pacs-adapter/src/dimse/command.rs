//! DIMSE command sets (PS3.7 §9.3 and §E): the group-0000 elements of C-ECHO, C-FIND, C-GET,
//! C-MOVE, C-STORE and C-CANCEL requests and responses, encoded and decoded here directly.
//!
//! Command sets are always Implicit VR Little Endian (PS3.7 §6.3.1) and hold only a handful of
//! elements of known VR, so a small codec of our own is simpler and stricter than a general
//! DICOM parser: every element is bounds-checked, unknown elements are skipped, and the group
//! length is computed on encoding.

use super::DimseProtocolError;

/// Command Field (0000,0100) values used by the services this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandField {
    CStoreRq,
    CStoreRsp,
    CGetRq,
    CGetRsp,
    CFindRq,
    CFindRsp,
    CMoveRq,
    CMoveRsp,
    CEchoRq,
    CEchoRsp,
    CCancelRq,
}

impl CommandField {
    pub fn code(self) -> u16 {
        match self {
            CommandField::CStoreRq => 0x0001,
            CommandField::CStoreRsp => 0x8001,
            CommandField::CGetRq => 0x0010,
            CommandField::CGetRsp => 0x8010,
            CommandField::CFindRq => 0x0020,
            CommandField::CFindRsp => 0x8020,
            CommandField::CMoveRq => 0x0021,
            CommandField::CMoveRsp => 0x8021,
            CommandField::CEchoRq => 0x0030,
            CommandField::CEchoRsp => 0x8030,
            CommandField::CCancelRq => 0x0FFF,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            0x0001 => CommandField::CStoreRq,
            0x8001 => CommandField::CStoreRsp,
            0x0010 => CommandField::CGetRq,
            0x8010 => CommandField::CGetRsp,
            0x0020 => CommandField::CFindRq,
            0x8020 => CommandField::CFindRsp,
            0x0021 => CommandField::CMoveRq,
            0x8021 => CommandField::CMoveRsp,
            0x0030 => CommandField::CEchoRq,
            0x8030 => CommandField::CEchoRsp,
            0x0FFF => CommandField::CCancelRq,
            _ => return None,
        })
    }
}

/// Priority (0000,0700).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
}

impl Priority {
    fn code(self) -> u16 {
        match self {
            Priority::Medium => 0x0000,
            Priority::High => 0x0001,
            Priority::Low => 0x0002,
        }
    }
}

/// CommandDataSetType (0000,0800) value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;
/// CommandDataSetType value we send when a data set follows (any other value means the same).
const DATA_SET_PRESENT: u16 = 0x0000;

/// Largest command set accepted from a peer. Real command sets are a few hundred bytes; the cap
/// keeps a hostile peer from making us buffer an endless "command".
pub const MAX_COMMAND_SET_LEN: usize = 64 * 1024;

/// A decoded or to-be-encoded command set. Fields absent from a message are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: CommandField,
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class_uid: Option<String>,
    /// Message ID (0000,0110).
    pub message_id: Option<u16>,
    /// Message ID Being Responded To (0000,0120).
    pub message_id_responded_to: Option<u16>,
    /// Move Destination (0000,0600).
    pub move_destination: Option<String>,
    /// Priority (0000,0700).
    pub priority: Option<Priority>,
    /// Whether a data set follows the command (0000,0800 != 0x0101).
    pub has_data_set: bool,
    /// Status (0000,0900).
    pub status: Option<u16>,
    /// Offending Element (0000,0901), as (group, element) pairs.
    pub offending_elements: Vec<(u16, u16)>,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Error ID (0000,0903).
    pub error_id: Option<u16>,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance_uid: Option<String>,
    /// Number of Remaining / Completed / Failed / Warning Sub-operations (0000,1020..1023).
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
    /// Move Originator Application Entity Title (0000,1030).
    pub move_originator_ae_title: Option<String>,
    /// Move Originator Message ID (0000,1031).
    pub move_originator_message_id: Option<u16>,
}

impl Command {
    fn empty(field: CommandField) -> Self {
        Command {
            field,
            affected_sop_class_uid: None,
            message_id: None,
            message_id_responded_to: None,
            move_destination: None,
            priority: None,
            has_data_set: false,
            status: None,
            offending_elements: Vec::new(),
            error_comment: None,
            error_id: None,
            affected_sop_instance_uid: None,
            remaining: None,
            completed: None,
            failed: None,
            warning: None,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        }
    }

    pub fn c_echo_rq(message_id: u16) -> Self {
        Command {
            affected_sop_class_uid: Some(crate::syntax::VERIFICATION.to_owned()),
            message_id: Some(message_id),
            ..Command::empty(CommandField::CEchoRq)
        }
    }

    /// A C-FIND, C-GET or C-MOVE request; the identifier follows as the data set.
    pub fn query_rq(field: CommandField, sop_class_uid: &str, message_id: u16) -> Self {
        Command {
            affected_sop_class_uid: Some(sop_class_uid.to_owned()),
            message_id: Some(message_id),
            priority: Some(Priority::Medium),
            has_data_set: true,
            ..Command::empty(field)
        }
    }

    pub fn c_move_rq(sop_class_uid: &str, message_id: u16, destination: &str) -> Self {
        Command {
            move_destination: Some(destination.to_owned()),
            ..Command::query_rq(CommandField::CMoveRq, sop_class_uid, message_id)
        }
    }

    pub fn c_cancel_rq(message_id_responded_to: u16) -> Self {
        Command { message_id_responded_to: Some(message_id_responded_to), ..Command::empty(CommandField::CCancelRq) }
    }

    pub fn c_store_rq(message_id: u16, sop_class_uid: &str, sop_instance_uid: &str) -> Self {
        Command {
            affected_sop_class_uid: Some(sop_class_uid.to_owned()),
            affected_sop_instance_uid: Some(sop_instance_uid.to_owned()),
            message_id: Some(message_id),
            priority: Some(Priority::Medium),
            has_data_set: true,
            ..Command::empty(CommandField::CStoreRq)
        }
    }

    /// The response to a C-STORE request received as an SCP (C-GET sub-operation or C-MOVE
    /// destination).
    pub fn c_store_rsp(request: &Command, status: u16) -> Self {
        Command {
            affected_sop_class_uid: request.affected_sop_class_uid.clone(),
            affected_sop_instance_uid: request.affected_sop_instance_uid.clone(),
            message_id_responded_to: request.message_id,
            status: Some(status),
            ..Command::empty(CommandField::CStoreRsp)
        }
    }

    /// The response to a C-ECHO request received as an SCP.
    pub fn c_echo_rsp(request: &Command) -> Self {
        Command {
            affected_sop_class_uid: request.affected_sop_class_uid.clone(),
            message_id_responded_to: request.message_id,
            status: Some(0x0000),
            ..Command::empty(CommandField::CEchoRsp)
        }
    }

    /// Encodes the command set as Implicit VR Little Endian, group length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        let put_str = |body: &mut Vec<u8>, element: u16, value: &str, pad: u8| {
            let mut bytes = value.as_bytes().to_vec();
            if bytes.len() % 2 == 1 {
                bytes.push(pad);
            }
            put_element(body, element, &bytes);
        };
        if let Some(uid) = &self.affected_sop_class_uid {
            put_str(&mut body, 0x0002, uid, 0);
        }
        put_element(&mut body, 0x0100, &self.field.code().to_le_bytes());
        if let Some(id) = self.message_id {
            put_element(&mut body, 0x0110, &id.to_le_bytes());
        }
        if let Some(id) = self.message_id_responded_to {
            put_element(&mut body, 0x0120, &id.to_le_bytes());
        }
        if let Some(dest) = &self.move_destination {
            put_str(&mut body, 0x0600, dest, b' ');
        }
        if let Some(priority) = self.priority {
            put_element(&mut body, 0x0700, &priority.code().to_le_bytes());
        }
        let data_set_type = if self.has_data_set { DATA_SET_PRESENT } else { NO_DATA_SET };
        put_element(&mut body, 0x0800, &data_set_type.to_le_bytes());
        if let Some(status) = self.status {
            put_element(&mut body, 0x0900, &status.to_le_bytes());
        }
        if !self.offending_elements.is_empty() {
            let mut tags = Vec::with_capacity(self.offending_elements.len() * 4);
            for (group, element) in &self.offending_elements {
                tags.extend_from_slice(&group.to_le_bytes());
                tags.extend_from_slice(&element.to_le_bytes());
            }
            put_element(&mut body, 0x0901, &tags);
        }
        if let Some(comment) = &self.error_comment {
            put_str(&mut body, 0x0902, comment, b' ');
        }
        if let Some(id) = self.error_id {
            put_element(&mut body, 0x0903, &id.to_le_bytes());
        }
        if let Some(uid) = &self.affected_sop_instance_uid {
            put_str(&mut body, 0x1000, uid, 0);
        }
        for (element, value) in
            [(0x1020, self.remaining), (0x1021, self.completed), (0x1022, self.failed), (0x1023, self.warning)]
        {
            if let Some(count) = value {
                put_element(&mut body, element, &count.to_le_bytes());
            }
        }
        if let Some(ae) = &self.move_originator_ae_title {
            put_str(&mut body, 0x1030, ae, b' ');
        }
        if let Some(id) = self.move_originator_message_id {
            put_element(&mut body, 0x1031, &id.to_le_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put_element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a command set. Elements outside group 0000 or unknown to us are skipped; a
    /// truncated element, a missing or unknown Command Field, or an oversized set is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DimseProtocolError> {
        if bytes.len() > MAX_COMMAND_SET_LEN {
            return Err(DimseProtocolError::CommandTooLarge(bytes.len()));
        }
        let mut field = None;
        let mut command = Command::empty(CommandField::CEchoRq);
        let mut data_set_type = None;
        let mut rest = bytes;
        while !rest.is_empty() {
            if rest.len() < 8 {
                return Err(DimseProtocolError::MalformedCommand("truncated element header"));
            }
            let group = u16::from_le_bytes([rest[0], rest[1]]);
            let element = u16::from_le_bytes([rest[2], rest[3]]);
            let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let value = rest
                .get(8..8usize.saturating_add(len))
                .ok_or(DimseProtocolError::MalformedCommand("element value past the end"))?;
            rest = &rest[8 + len..];
            if group != 0x0000 {
                continue;
            }
            match element {
                0x0002 => command.affected_sop_class_uid = Some(text(value)),
                0x0100 => {
                    let code = us(value)?;
                    field = Some(CommandField::from_code(code).ok_or(DimseProtocolError::UnknownCommandField(code))?);
                }
                0x0110 => command.message_id = Some(us(value)?),
                0x0120 => command.message_id_responded_to = Some(us(value)?),
                0x0600 => command.move_destination = Some(text(value)),
                0x0700 => {
                    command.priority = Some(match us(value)? {
                        0x0001 => Priority::High,
                        0x0002 => Priority::Low,
                        _ => Priority::Medium,
                    })
                }
                0x0800 => data_set_type = Some(us(value)?),
                0x0900 => command.status = Some(us(value)?),
                0x0901 => {
                    command.offending_elements = value
                        .chunks_exact(4)
                        .map(|c| (u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]])))
                        .collect()
                }
                0x0902 => command.error_comment = Some(text(value)),
                0x0903 => command.error_id = Some(us(value)?),
                0x1000 => command.affected_sop_instance_uid = Some(text(value)),
                0x1020 => command.remaining = Some(us(value)?),
                0x1021 => command.completed = Some(us(value)?),
                0x1022 => command.failed = Some(us(value)?),
                0x1023 => command.warning = Some(us(value)?),
                0x1030 => command.move_originator_ae_title = Some(text(value)),
                0x1031 => command.move_originator_message_id = Some(us(value)?),
                _ => {}
            }
        }
        command.field = field.ok_or(DimseProtocolError::MalformedCommand("no Command Field"))?;
        command.has_data_set = match data_set_type {
            Some(NO_DATA_SET) => false,
            Some(_) => true,
            None => return Err(DimseProtocolError::MalformedCommand("no CommandDataSetType")),
        };
        Ok(command)
    }
}

fn put_element(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0x0000u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn us(value: &[u8]) -> Result<u16, DimseProtocolError> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(DimseProtocolError::MalformedCommand("US element is not 2 bytes")),
    }
}

/// UI / AE / LO values: padding (NUL or space) is not significant.
fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim_matches(|c| c == '\0' || c == ' ').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::Tag;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

    fn sample_commands() -> Vec<Command> {
        let mut rsp = Command::c_store_rsp(&Command::c_store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"), 0xB000);
        rsp.error_comment = Some("odd".into());
        rsp.offending_elements = vec![(0x0010, 0x0010)];
        let mut get_rsp = Command::empty(CommandField::CGetRsp);
        get_rsp.message_id_responded_to = Some(3);
        get_rsp.status = Some(0xFF00);
        get_rsp.remaining = Some(199);
        get_rsp.completed = Some(1);
        get_rsp.failed = Some(0);
        get_rsp.warning = Some(0);
        let mut store = Command::c_store_rq(9, "1.2.840.10008.5.1.4.1.1.4", "1.2.3.45");
        store.move_originator_ae_title = Some("FEDGW".into());
        store.move_originator_message_id = Some(12);
        vec![
            Command::c_echo_rq(1),
            Command::query_rq(CommandField::CFindRq, crate::syntax::STUDY_ROOT_FIND, 2),
            Command::c_move_rq(crate::syntax::STUDY_ROOT_MOVE, 4, "FEDGW"),
            Command::c_cancel_rq(4),
            rsp,
            get_rsp,
            store,
        ]
    }

    #[test]
    fn round_trips_every_command_kind() {
        for command in sample_commands() {
            let bytes = command.encode();
            assert_eq!(Command::decode(&bytes).expect("decodes"), command);
        }
    }

    /// Cross-check against an independent parser: dicom-object reads our encoding with the
    /// right group length and values.
    #[test]
    fn encoding_is_read_by_dicom_object() {
        let command = Command::c_move_rq(crate::syntax::STUDY_ROOT_MOVE, 513, "FEDGW");
        let bytes = command.encode();
        let obj =
            InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased()).expect("parses");
        let group_length = obj.element(Tag(0x0000, 0x0000)).expect("group length").to_int::<u32>().expect("UL");
        assert_eq!(group_length as usize, bytes.len() - 12);
        let field = obj.element(Tag(0x0000, 0x0100)).expect("field").to_int::<u16>().expect("US");
        assert_eq!(field, 0x0021);
        let dest = obj.element(Tag(0x0000, 0x0600)).expect("dest").to_str().expect("AE");
        assert_eq!(dest.trim(), "FEDGW");
        let id = obj.element(Tag(0x0000, 0x0110)).expect("id").to_int::<u16>().expect("US");
        assert_eq!(id, 513);
    }

    #[test]
    fn rejects_malformed_command_sets() {
        let good = Command::c_echo_rq(1).encode();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated header", good[..5].to_vec()),
            ("value past end", {
                let mut b = good.clone();
                b.truncate(b.len() - 1);
                b
            }),
            ("no command field", {
                let mut b = Vec::new();
                put_element(&mut b, 0x0800, &NO_DATA_SET.to_le_bytes());
                b
            }),
            ("unknown command field", {
                let mut b = Vec::new();
                put_element(&mut b, 0x0100, &0x1234u16.to_le_bytes());
                put_element(&mut b, 0x0800, &NO_DATA_SET.to_le_bytes());
                b
            }),
            ("bad US length", {
                let mut b = Vec::new();
                put_element(&mut b, 0x0100, &[1, 0, 0]);
                b
            }),
            ("huge length", {
                let mut b = Vec::new();
                b.extend_from_slice(&[0, 0, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff]);
                b
            }),
            ("oversized", vec![0u8; MAX_COMMAND_SET_LEN + 1]),
        ];
        for (name, bytes) in cases {
            assert!(Command::decode(&bytes).is_err(), "{name} should be rejected");
        }
    }
}
