//! Turns the bytes of a regedit export into text.
//!
//! regedit wrote REGEDIT4 files in the ANSI code page (Windows-1252 on the
//! Western European servers Exchange 5.5 ran on) and version 5.00 files in
//! UTF-16LE with a byte-order mark; hand editors save UTF-8. This module
//! picks the encoding and decodes; `parse` reads the text that results.

/// Turns the bytes of an export into text, by byte-order mark or by content.
///
/// A file without a mark that is valid UTF-8 is read as UTF-8; otherwise it
/// is the ANSI code page regedit used for REGEDIT4. An ANSI file whose
/// accented bytes happen to form valid UTF-8 is therefore misread, which
/// takes unusual sequences such as "Ã©" and is not worth guessing about.
pub(super) fn decode(bytes: &[u8]) -> Result<String, String> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8(rest.to_vec())
            .map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to() + 3));
    }
    // UTF-16LE that lost its mark: ASCII text with every second byte 0.
    if bytes.len() >= 2 && bytes[0] != 0 && bytes[1] == 0 {
        return utf16(bytes, u16::from_le_bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => Ok(bytes.iter().map(|&b| windows_1252(b)).collect()),
    }
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, String> {
    if bytes.len() % 2 != 0 {
        return Err("UTF-16 text with an odd number of bytes".into());
    }
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|e| {
            format!(
                "invalid UTF-16: unpaired surrogate {:#06X}",
                e.unpaired_surrogate()
            )
        })
}

/// Windows-1252 to Unicode. It is Latin-1 except for 0x80–0x9F, where it
/// holds typographic characters; the five bytes it leaves undefined map to
/// the C1 control of the same number, as Windows itself does.
fn windows_1252(byte: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, // 0x80
        0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F, // 0x88
        0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, // 0x90
        0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178, // 0x98
    ];
    match byte {
        0x80..=0x9F => char::from_u32(u32::from(HIGH[usize::from(byte - 0x80)]))
            .unwrap_or(char::REPLACEMENT_CHARACTER),
        _ => char::from(byte),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_1252_decodes_the_typographic_block_and_latin_1() {
        let text = decode(b"caf\xE9 \x92quoted\x92 \x80 \x81").expect("decodes");
        assert_eq!(text, "café \u{2019}quoted\u{2019} € \u{81}");
        assert_eq!(windows_1252(0x9F), 'Ÿ');
        assert_eq!(windows_1252(0x8A), 'Š');
        assert_eq!(windows_1252(b'A'), 'A');
    }

    #[test]
    fn utf16_needs_whole_units_and_paired_surrogates() {
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend("é\r\n".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(decode(&bytes).as_deref(), Ok("é\r\n"));
        assert!(decode(&[0xFF, 0xFE, b'A']).is_err());
        assert!(decode(&[0xFF, 0xFE, 0x00, 0xD8, b'A', 0]).is_err());
        assert_eq!(decode(b"\xEF\xBB\xBFREGEDIT4").as_deref(), Ok("REGEDIT4"));
    }
}
