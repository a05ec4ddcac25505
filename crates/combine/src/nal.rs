//! Just enough H.264 and H.265 Annex B parsing (ITU-T H.264, Annex B and
//! 7.3.1 NAL unit header; ITU-T H.265, 7.3.1.2) to find the parameter sets
//! and the IDR slice in a chunk's packets, so chunks with different
//! parameter sets are refused: the MP4's `avcC`/`hvcC` box can describe
//! only one set.

/// The NAL unit syntax of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// H.264: the type is the low five bits of the one header byte.
    H264,
    /// H.265: the type is bits 1-6 of the first of two header bytes.
    H265,
}

/// What a NAL unit is, as far as joining chunks cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A parameter set, by name (`VPS`, `SPS`, `PPS`).
    ParameterSet(&'static str),
    /// A slice of an IDR picture.
    Idr,
    /// Anything else.
    Other,
}

impl Syntax {
    /// What `unit` (start code removed) is.
    pub(crate) fn classify(self, unit: &[u8]) -> Unit {
        let Some(&b) = unit.first() else {
            return Unit::Other;
        };
        match self {
            // H.264 Table 7-1: 5 IDR slice, 7 SPS, 8 PPS.
            Syntax::H264 => match b & 0x1f {
                5 => Unit::Idr,
                7 => Unit::ParameterSet("SPS"),
                8 => Unit::ParameterSet("PPS"),
                _ => Unit::Other,
            },
            // H.265 Table 7-1: 19 IDR_W_RADL, 20 IDR_N_LP, 32 VPS, 33 SPS,
            // 34 PPS.
            Syntax::H265 => match (b >> 1) & 0x3f {
                19 | 20 => Unit::Idr,
                32 => Unit::ParameterSet("VPS"),
                33 => Unit::ParameterSet("SPS"),
                34 => Unit::ParameterSet("PPS"),
                _ => Unit::Other,
            },
        }
    }
}

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
        let kinds: Vec<Unit> = units.iter().map(|u| Syntax::H264.classify(u)).collect();
        assert_eq!(
            kinds,
            vec![
                Unit::ParameterSet("SPS"),
                Unit::ParameterSet("PPS"),
                Unit::Idr
            ]
        );
        // H.265: VPS (32), SPS (33), PPS (34), IDR_W_RADL (19), a trailing
        // picture (1).
        let hevc: Vec<Unit> = [0x40u8, 0x42, 0x44, 0x26, 0x02]
            .iter()
            .map(|b| Syntax::H265.classify(&[*b, 1]))
            .collect();
        assert_eq!(
            hevc,
            vec![
                Unit::ParameterSet("VPS"),
                Unit::ParameterSet("SPS"),
                Unit::ParameterSet("PPS"),
                Unit::Idr,
                Unit::Other
            ]
        );
    }

    #[test]
    fn no_start_code_gives_no_units() {
        assert_eq!(nal_units(&[1, 2, 3, 0, 0]).count(), 0);
    }
}
