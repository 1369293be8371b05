//! `[dataset_limits]`: the bounds on a data set from outside, checked on its bytes before it is
//! parsed, and on decoding it.

use super::problems::Problems;
use super::{raw, DataSetLimitsConfig};

pub(super) fn dataset_limits(raw: Option<&raw::DataSetLimits>, problems: &mut Problems) -> DataSetLimitsConfig {
    let mut size = |key: &str, text: Option<&String>, default: &str| {
        problems.positive_size(&format!("dataset_limits.{key}"), text.map(String::as_str), default)
    };
    let max_inflated_size = size("max_inflated_size", raw.and_then(|d| d.max_inflated_size.as_ref()), "512MiB");
    let max_frame_size = size("max_frame_size", raw.and_then(|d| d.max_frame_size.as_ref()), "1GiB");
    let max_decoded_size = size("max_decoded_size", raw.and_then(|d| d.max_decoded_size.as_ref()), "1GiB");
    let decode_memory = size("decode_memory", raw.and_then(|d| d.decode_memory.as_ref()), "2GiB");
    problems.check(if decode_memory >= max_decoded_size && decode_memory >= 1 << 20 {
        Ok(())
    } else {
        Err("dataset_limits.decode_memory must be at least 1MiB and at least dataset_limits.max_decoded_size \
             (one decode must fit in it)"
            .into())
    });
    let max_sequence_depth = raw.and_then(|d| d.max_sequence_depth).unwrap_or(64);
    problems.check(if (1..=1000).contains(&max_sequence_depth) {
        Ok(())
    } else {
        Err("dataset_limits.max_sequence_depth must be 1 to 1000".into())
    });
    DataSetLimitsConfig { max_sequence_depth, max_inflated_size, max_frame_size, max_decoded_size, decode_memory }
}
