//! Just enough H.264 Annex B parsing (ITU-T H.264, Annex B byte stream and
//! 7.3.1 NAL unit header) to find the parameter sets and the IDR slice in a
//! chunk's packets, so chunks with different SPS/PPS are refused: the MP4's
//! `avcC` box can describe only one set.

/// NAL unit type of an IDR picture's coded slice (H.264 Table 7-1).
pub(crate) const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub(crate) const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub(crate) const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B access unit, start codes removed.
pub(crate) fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next unit's start code is 3 bytes, or 4 with a leading zero
            // (trailing zero bytes belong to no unit).
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

/// The type of a NAL unit (low five bits of its header byte).
pub(crate) fn nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| b & 0x1f)
}

/// Hex of the first bytes of a parameter set, for error messages.
pub(crate) fn describe(unit: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for b in unit.iter().take(24) {
        let _ = write!(s, "{b:02x}");
    }
    if unit.len() > 24 {
        s.push('…');
    }
    format!("{} bytes {s}", unit.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0,
        ];
        let units: Vec<&[u8]> = nal_units(&au).collect();
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5, 0]]);
        let types: Vec<u8> = units.iter().filter_map(|u| nal_type(u)).collect();
        assert_eq!(types, vec![NAL_SPS, NAL_PPS, NAL_IDR]);
    }

    #[test]
    fn no_start_code_gives_no_units() {
        assert_eq!(nal_units(&[1, 2, 3, 0, 0]).count(), 0);
    }
}
