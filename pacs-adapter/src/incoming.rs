//! Reading PDUs off an association. P-DATA-TF, nearly every byte a retrieval receives, is read
//! into the association's own read buffer and its presentation data values are handed on as
//! slices of it: the one copy of a data set's bytes is into its message's buffer. (dicom-ul's
//! own reading copies each PDU out of the buffer, then each value out of the PDU.) Any other
//! PDU is parsed by dicom-ul from the same buffer.

use bytes::{Buf, BytesMut};
use dicom_ul::pdu::PDataValueType;
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::dimse::DimseProtocolError;

/// PDU type of P-DATA-TF (PS3.8 9.3.1).
const P_DATA_TF: u8 = 0x04;
/// A PDU's header: type, reserved, length (PS3.8 9.3.1).
const PDU_HEADER: usize = 6;
/// A presentation data value item's header: length, presentation context, message control
/// header (PS3.8 9.3.5.1, E.2).
const PDV_HEADER: usize = 6;

/// One presentation data value, borrowed from the PDU it arrived in.
#[derive(Debug, Clone)]
pub struct Pdv<'a> {
    pub presentation_context_id: u8,
    pub value_type: PDataValueType,
    pub is_last: bool,
    pub data: &'a [u8],
}

impl<'a> From<&'a dicom_ul::pdu::PDataValue> for Pdv<'a> {
    fn from(value: &'a dicom_ul::pdu::PDataValue) -> Self {
        Pdv {
            presentation_context_id: value.presentation_context_id,
            value_type: value.value_type.clone(),
            is_last: value.is_last,
            data: &value.data,
        }
    }
}

/// What a PDU was, once read.
#[derive(Debug)]
pub enum Incoming {
    /// A P-DATA-TF, its values handed on.
    PData,
    /// Any other PDU.
    Other(Pdu),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("incoming PDU of {length} bytes: the maximum is {max}")]
    TooLarge { length: u32, max: u32 },
    #[error("malformed P-DATA-TF: {0}")]
    MalformedPData(&'static str),
    #[error("malformed PDU: {0}")]
    Malformed(String),
    /// A value that does not fit the message being assembled.
    #[error(transparent)]
    Message(#[from] DimseProtocolError),
}

/// Reads the next PDU from `socket` through `buffer` (the association's read buffer, which
/// may hold bytes read before), at most `max_pdu_length` long; a P-DATA-TF's values go to
/// `on_pdv` in order.
pub(crate) async fn read_pdu<S: AsyncRead + Unpin>(
    socket: &mut S,
    buffer: &mut BytesMut,
    max_pdu_length: u32,
    on_pdv: &mut impl FnMut(Pdv<'_>) -> Result<(), DimseProtocolError>,
) -> Result<Incoming, ReadError> {
    loop {
        if let Some(incoming) = take_pdu(buffer, max_pdu_length, on_pdv)? {
            return Ok(incoming);
        }
        // Room for the rest of this PDU at least, so that it arrives in few reads.
        let wanted = pdu_length(buffer).map_or(PDU_HEADER, |length| PDU_HEADER + length as usize);
        buffer.reserve(wanted - buffer.len());
        if socket.read_buf(buffer).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// The length its header gives the PDU at the front of `buffer`, once the header is there.
fn pdu_length(buffer: &[u8]) -> Option<u32> {
    (buffer.len() >= PDU_HEADER).then(|| u32::from_be_bytes([buffer[2], buffer[3], buffer[4], buffer[5]]))
}

/// Takes the PDU at the front of `buffer` once the buffer holds all of it (none before),
/// refusing it from its header on when it is longer than `max_pdu_length`; a P-DATA-TF's values
/// go to `on_pdv` in order. A whole PDU is taken off the buffer even when it is refused (a
/// malformed item, a value `on_pdv` refuses), so that nothing of it is handed on twice.
pub fn take_pdu(
    buffer: &mut BytesMut,
    max_pdu_length: u32,
    on_pdv: &mut impl FnMut(Pdv<'_>) -> Result<(), DimseProtocolError>,
) -> Result<Option<Incoming>, ReadError> {
    let Some(length) = pdu_length(buffer) else { return Ok(None) };
    if length > max_pdu_length {
        return Err(ReadError::TooLarge { length, max: max_pdu_length });
    }
    let whole = PDU_HEADER + length as usize;
    if buffer.len() < whole {
        return Ok(None);
    }
    let taken = if buffer[0] == P_DATA_TF {
        each_pdv(&buffer[PDU_HEADER..whole], on_pdv).map(|()| Incoming::PData)
    } else {
        match dicom_ul::pdu::read_pdu(&buffer[..whole], max_pdu_length, true) {
            Ok(Some(pdu)) => Ok(Incoming::Other(pdu)),
            Ok(None) => Err(ReadError::Malformed("incomplete".into())),
            Err(e) => Err(ReadError::Malformed(e.to_string())),
        }
    };
    buffer.advance(whole);
    taken.map(Some)
}

/// Hands a P-DATA-TF's values (its body, after the PDU header) to `on_pdv`.
fn each_pdv(
    mut body: &[u8],
    on_pdv: &mut impl FnMut(Pdv<'_>) -> Result<(), DimseProtocolError>,
) -> Result<(), ReadError> {
    while !body.is_empty() {
        if body.len() < PDV_HEADER {
            return Err(ReadError::MalformedPData("an item shorter than its header"));
        }
        let item_length = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        // The item's length counts the context and the control header, then the value.
        if item_length < 2 {
            return Err(ReadError::MalformedPData("an item without its control header"));
        }
        if item_length > body.len() - 4 {
            return Err(ReadError::MalformedPData("an item longer than its PDU"));
        }
        let control = body[5];
        on_pdv(Pdv {
            presentation_context_id: body[4],
            value_type: if control & 0x01 != 0 { PDataValueType::Command } else { PDataValueType::Data },
            is_last: control & 0x02 != 0,
            data: &body[PDV_HEADER..4 + item_length],
        })?;
        body = &body[4 + item_length..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{PDataValue, Pdu};

    fn encoded(pdu: &Pdu) -> Vec<u8> {
        let mut bytes = Vec::new();
        dicom_ul::pdu::write_pdu(&mut bytes, pdu).expect("encodes");
        bytes
    }

    fn pdata(values: &[(u8, PDataValueType, bool, &[u8])]) -> Pdu {
        Pdu::PData {
            data: values
                .iter()
                .map(|(presentation_context_id, value_type, is_last, data)| PDataValue {
                    presentation_context_id: *presentation_context_id,
                    value_type: value_type.clone(),
                    is_last: *is_last,
                    data: data.to_vec(),
                })
                .collect(),
        }
    }

    /// Reads every PDU of `wire`, arriving `chunk` bytes at a time; the values as owned tuples.
    #[allow(clippy::type_complexity)]
    fn read_all(
        wire: &[u8],
        chunk: usize,
        max: u32,
    ) -> (Vec<Result<Option<Pdu>, String>>, Vec<(u8, PDataValueType, bool, Vec<u8>)>) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(async {
            let (mut writer, mut reader) = tokio::io::duplex(64);
            let wire = wire.to_vec();
            let writing = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for piece in wire.chunks(chunk) {
                    if writer.write_all(piece).await.is_err() {
                        break; // the reader gave up
                    }
                }
            });
            let (mut buffer, mut values, mut read) = (BytesMut::new(), Vec::new(), Vec::new());
            loop {
                let mut on_pdv = |v: Pdv<'_>| {
                    values.push((v.presentation_context_id, v.value_type, v.is_last, v.data.to_vec()));
                    Ok(())
                };
                match read_pdu(&mut reader, &mut buffer, max, &mut on_pdv).await {
                    Ok(Incoming::PData) => read.push(Ok(None)),
                    Ok(Incoming::Other(pdu)) => read.push(Ok(Some(pdu))),
                    Err(ReadError::Closed) => break,
                    Err(e) => {
                        read.push(Err(e.to_string()));
                        break;
                    }
                }
            }
            drop(reader);
            writing.await.expect("writer");
            (read, values)
        })
    }

    #[test]
    fn values_arrive_as_written_however_the_bytes_are_split_and_other_pdus_are_parsed() {
        use PDataValueType::{Command, Data};
        let large = vec![7u8; 70_000];
        let mut wire = encoded(&pdata(&[(1, Command, true, b"command"), (1, Data, false, b"first")]));
        wire.extend(encoded(&pdata(&[(1, Data, false, &large), (1, Data, true, b"")])));
        wire.extend(encoded(&Pdu::ReleaseRQ));
        for chunk in [1, 5, 6, 7, 4096, 1 << 20] {
            let (read, values) = read_all(&wire, chunk, 1 << 20);
            assert_eq!(read.len(), 3, "chunk {chunk}");
            assert!(matches!(read[2], Ok(Some(Pdu::ReleaseRQ))), "chunk {chunk}: {:?}", read[2]);
            let expected: Vec<(u8, PDataValueType, bool, Vec<u8>)> = vec![
                (1, Command, true, b"command".to_vec()),
                (1, Data, false, b"first".to_vec()),
                (1, Data, false, large.clone()),
                (1, Data, true, Vec::new()),
            ];
            assert_eq!(values, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_pdu_over_the_maximum_or_a_malformed_item_is_refused_before_it_is_read() {
        let wire = encoded(&pdata(&[(1, PDataValueType::Data, true, &[0u8; 5000])]));
        let (read, values) = read_all(&wire, 4096, 4096);
        assert_eq!(read, vec![Err("incoming PDU of 5006 bytes: the maximum is 4096".to_string())]);
        assert!(values.is_empty());
        // An item claiming more than its PDU holds; one too short for its control header.
        for (item_length, words) in [(100u32, "longer than its PDU"), (1, "without its control header")] {
            let mut wire = vec![P_DATA_TF, 0, 0, 0, 0, 8];
            wire.extend(item_length.to_be_bytes());
            wire.extend([1, 0x02, 0, 0]);
            let (read, _) = read_all(&wire, 3, 4096);
            let error = read[0].as_ref().expect_err("refused");
            assert!(error.contains(words), "{error}");
        }
        // A header cut short by the peer closing: no PDU, no value.
        let (read, values) = read_all(&[P_DATA_TF, 0, 0, 0], 1, 4096);
        assert!(read.is_empty() && values.is_empty());
    }

    #[test]
    fn a_refused_pdu_is_taken_off_the_buffer_whole() {
        let mut buffer = BytesMut::from(&encoded(&pdata(&[(1, PDataValueType::Data, true, b"refused")]))[..]);
        buffer.extend_from_slice(&encoded(&Pdu::ReleaseRQ));
        let mut refuse = |_: Pdv<'_>| Err(DimseProtocolError::MalformedCommand("refused"));
        assert!(take_pdu(&mut buffer, 4096, &mut refuse).is_err());
        let next = take_pdu(&mut buffer, 4096, &mut refuse).expect("the next PDU");
        assert!(matches!(next, Some(Incoming::Other(Pdu::ReleaseRQ))), "{next:?}");
        assert!(buffer.is_empty());
    }
}
