//! Byte encodings of simple fonts and PDF text strings, and glyph names to Unicode.
//! Only what text extraction needs: the four base encodings of the PDF reference,
//! PDFDocEncoding, and the glyph names of the Latin sets (plus `uniXXXX` forms).

/// A simple font's base encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Base {
    /// Adobe StandardEncoding (Type 1 fonts without an `/Encoding`).
    Standard,
    /// Windows code page 1252.
    WinAnsi,
    /// Mac OS Roman.
    MacRoman,
}

impl Base {
    /// From an `/Encoding` or `/BaseEncoding` name.
    pub(super) fn from_name(name: &[u8]) -> Option<Base> {
        match name {
            b"WinAnsiEncoding" => Some(Base::WinAnsi),
            b"MacRomanEncoding" | b"MacExpertEncoding" => Some(Base::MacRoman),
            b"StandardEncoding" => Some(Base::Standard),
            _ => None,
        }
    }

    /// The character a code stands for, if any.
    pub(super) fn char(self, code: u8) -> Option<char> {
        match (self, code) {
            (_, 0x20..=0x7e) => Some(match (self, code) {
                (Base::Standard, b'\'') => '\u{2019}',
                (Base::Standard, b'`') => '\u{2018}',
                _ => char::from(code),
            }),
            (Base::WinAnsi, 0x80..=0x9f) => nth(WIN_ANSI_80, code - 0x80),
            (Base::WinAnsi, _) if code >= 0xa0 => Some(char::from(code)),
            (Base::MacRoman, 0x80..) => nth(MAC_ROMAN_80, code - 0x80),
            (Base::Standard, 0xa1..) => STANDARD_HIGH
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, ch)| *ch),
            _ => None,
        }
    }
}

/// A text string outside content streams (the document title): UTF-16 with a byte
/// order mark, UTF-8 with one (or valid UTF-8 with non-ASCII), else PDFDocEncoding.
pub(super) fn text_string(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(b"\xfe\xff") {
        return utf16(rest, u16::from_be_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xff\xfe") {
        return utf16(rest, u16::from_le_bytes);
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_owned();
    }
    bytes
        .iter()
        .filter_map(|&b| match b {
            0x80..=0x9f => nth(PDF_DOC_80, b - 0x80),
            0xa0 => Some('\u{20ac}'),
            _ => Some(char::from(b)),
        })
        .collect()
}

/// UTF-16 code units (an odd trailing byte is dropped), lossy.
pub(super) fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = bytes.chunks_exact(2).map(|p| unit([p[0], p[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or('\u{fffd}'))
        .collect()
}

/// The Unicode text of a glyph name: AGL names of the Latin sets, `uniXXXX…`,
/// `uXXXX[XX]`, ligatures spelt with `_`, and suffixed variants (`a.sc`).
pub(super) fn glyph(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let name = name.split('.').next().unwrap_or(name);
    if name.contains('_') {
        let parts: Option<String> = name.split('_').map(|p| glyph(p.as_bytes())).collect();
        return parts.filter(|s| !s.is_empty());
    }
    if let Some(pos) = ASCII_NAMES.iter().position(|n| *n == name) {
        return Some(char::from(0x20 + pos as u8).to_string());
    }
    if let Some(pos) = LATIN1_NAMES.iter().position(|n| *n == name) {
        return char::from_u32(0xa0 + pos as u32).map(String::from);
    }
    if let Some((_, text)) = OTHER_NAMES.iter().find(|(n, _)| *n == name) {
        return Some((*text).to_owned());
    }
    if name.len() == 1 && name.as_bytes()[0].is_ascii_alphabetic() {
        return Some(name.to_owned());
    }
    if let Some(hex) = name.strip_prefix("uni")
        && hex.len() >= 4
        && hex.len() % 4 == 0
    {
        let units: Option<Vec<u16>> = (0..hex.len() / 4)
            .map(|i| u16::from_str_radix(hex.get(i * 4..i * 4 + 4)?, 16).ok())
            .collect();
        let text: String = char::decode_utf16(units?).collect::<Result<_, _>>().ok()?;
        return Some(text);
    }
    if let Some(hex) = name.strip_prefix('u')
        && (4..=6).contains(&hex.len())
    {
        return char::from_u32(u32::from_str_radix(hex, 16).ok()?).map(String::from);
    }
    None
}

fn nth(table: &str, i: u8) -> Option<char> {
    table.chars().nth(usize::from(i)).filter(|&c| c != '\0')
}

/// WinAnsi 0x80–0x9f (`\0`: unassigned).
const WIN_ANSI_80: &str = "€\0‚ƒ„…†‡ˆ‰Š‹Œ\0Ž\0\0‘’“”•–—˜™š›œ\0žŸ";
/// Mac OS Roman 0x80–0xff.
const MAC_ROMAN_80: &str = "ÄÅÇÉÑÖÜáàâäãåçéèêëíìîïñóòôöõúùûü†°¢£§•¶ß®©™´¨≠ÆØ∞±≤≥¥µ∂∑∏π∫ªºΩæø¿¡¬√ƒ≈∆«»…\u{a0}ÀÃÕŒœ–—“”‘’÷◊ÿŸ⁄€‹›ﬁﬂ‡·‚„‰ÂÊÁËÈÍÎÏÌÓÔ\u{f8ff}ÒÚÛÙıˆ˜¯˘˙˚¸˝˛ˇ";
/// PDFDocEncoding 0x80–0x9f.
const PDF_DOC_80: &str = "•†‡…—–ƒ⁄‹›−‰„“”‘’‚™ﬁﬂŁŒŠŸŽıłœšž\0";
/// StandardEncoding above 0xa0.
const STANDARD_HIGH: &[(u8, char)] = &[
    (0xa1, '¡'),
    (0xa2, '¢'),
    (0xa3, '£'),
    (0xa4, '⁄'),
    (0xa5, '¥'),
    (0xa6, 'ƒ'),
    (0xa7, '§'),
    (0xa8, '¤'),
    (0xa9, '\''),
    (0xaa, '“'),
    (0xab, '«'),
    (0xac, '‹'),
    (0xad, '›'),
    (0xae, 'ﬁ'),
    (0xaf, 'ﬂ'),
    (0xb1, '–'),
    (0xb2, '†'),
    (0xb3, '‡'),
    (0xb4, '·'),
    (0xb6, '¶'),
    (0xb7, '•'),
    (0xb8, '‚'),
    (0xb9, '„'),
    (0xba, '”'),
    (0xbb, '»'),
    (0xbc, '…'),
    (0xbd, '‰'),
    (0xbf, '¿'),
    (0xc1, '`'),
    (0xc2, '´'),
    (0xc3, 'ˆ'),
    (0xc4, '˜'),
    (0xc5, '¯'),
    (0xc6, '˘'),
    (0xc7, '˙'),
    (0xc8, '¨'),
    (0xca, '˚'),
    (0xcb, '¸'),
    (0xcd, '˝'),
    (0xce, '˛'),
    (0xcf, 'ˇ'),
    (0xd0, '—'),
    (0xe1, 'Æ'),
    (0xe3, 'ª'),
    (0xe8, 'Ł'),
    (0xe9, 'Ø'),
    (0xea, 'Œ'),
    (0xeb, 'º'),
    (0xf1, 'æ'),
    (0xf5, 'ı'),
    (0xf8, 'ł'),
    (0xf9, 'ø'),
    (0xfa, 'œ'),
    (0xfb, 'ß'),
];

/// Glyph names of 0x20–0x7e (single letters are handled apart).
const ASCII_NAMES: [&str; 95] = [
    "space",
    "exclam",
    "quotedbl",
    "numbersign",
    "dollar",
    "percent",
    "ampersand",
    "quotesingle",
    "parenleft",
    "parenright",
    "asterisk",
    "plus",
    "comma",
    "hyphen",
    "period",
    "slash",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "colon",
    "semicolon",
    "less",
    "equal",
    "greater",
    "question",
    "at",
    "A",
    "B",
    "C",
    "D",
    "E",
    "F",
    "G",
    "H",
    "I",
    "J",
    "K",
    "L",
    "M",
    "N",
    "O",
    "P",
    "Q",
    "R",
    "S",
    "T",
    "U",
    "V",
    "W",
    "X",
    "Y",
    "Z",
    "bracketleft",
    "backslash",
    "bracketright",
    "asciicircum",
    "underscore",
    "grave",
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "n",
    "o",
    "p",
    "q",
    "r",
    "s",
    "t",
    "u",
    "v",
    "w",
    "x",
    "y",
    "z",
    "braceleft",
    "bar",
    "braceright",
    "asciitilde",
];

/// Glyph names of U+00A0–U+00FF.
const LATIN1_NAMES: [&str; 96] = [
    "nbspace",
    "exclamdown",
    "cent",
    "sterling",
    "currency",
    "yen",
    "brokenbar",
    "section",
    "dieresis",
    "copyright",
    "ordfeminine",
    "guillemotleft",
    "logicalnot",
    "sfthyphen",
    "registered",
    "macron",
    "degree",
    "plusminus",
    "twosuperior",
    "threesuperior",
    "acute",
    "mu",
    "paragraph",
    "periodcentered",
    "cedilla",
    "onesuperior",
    "ordmasculine",
    "guillemotright",
    "onequarter",
    "onehalf",
    "threequarters",
    "questiondown",
    "Agrave",
    "Aacute",
    "Acircumflex",
    "Atilde",
    "Adieresis",
    "Aring",
    "AE",
    "Ccedilla",
    "Egrave",
    "Eacute",
    "Ecircumflex",
    "Edieresis",
    "Igrave",
    "Iacute",
    "Icircumflex",
    "Idieresis",
    "Eth",
    "Ntilde",
    "Ograve",
    "Oacute",
    "Ocircumflex",
    "Otilde",
    "Odieresis",
    "multiply",
    "Oslash",
    "Ugrave",
    "Uacute",
    "Ucircumflex",
    "Udieresis",
    "Yacute",
    "Thorn",
    "germandbls",
    "agrave",
    "aacute",
    "acircumflex",
    "atilde",
    "adieresis",
    "aring",
    "ae",
    "ccedilla",
    "egrave",
    "eacute",
    "ecircumflex",
    "edieresis",
    "igrave",
    "iacute",
    "icircumflex",
    "idieresis",
    "eth",
    "ntilde",
    "ograve",
    "oacute",
    "ocircumflex",
    "otilde",
    "odieresis",
    "divide",
    "oslash",
    "ugrave",
    "uacute",
    "ucircumflex",
    "udieresis",
    "yacute",
    "thorn",
    "ydieresis",
];

/// Other common glyph names; ligatures spelt out, which is what a search wants.
const OTHER_NAMES: &[(&str, &str)] = &[
    ("quoteright", "\u{2019}"),
    ("quoteleft", "\u{2018}"),
    ("quotedblleft", "\u{201c}"),
    ("quotedblright", "\u{201d}"),
    ("quotesinglbase", "\u{201a}"),
    ("quotedblbase", "\u{201e}"),
    ("guilsinglleft", "\u{2039}"),
    ("guilsinglright", "\u{203a}"),
    ("endash", "\u{2013}"),
    ("emdash", "\u{2014}"),
    ("bullet", "\u{2022}"),
    ("ellipsis", "\u{2026}"),
    ("dagger", "\u{2020}"),
    ("daggerdbl", "\u{2021}"),
    ("perthousand", "\u{2030}"),
    ("trademark", "\u{2122}"),
    ("Euro", "\u{20ac}"),
    ("florin", "\u{192}"),
    ("fraction", "\u{2044}"),
    ("minus", "\u{2212}"),
    ("circumflex", "\u{2c6}"),
    ("tilde", "\u{2dc}"),
    ("breve", "\u{2d8}"),
    ("dotaccent", "\u{2d9}"),
    ("ring", "\u{2da}"),
    ("hungarumlaut", "\u{2dd}"),
    ("ogonek", "\u{2db}"),
    ("caron", "\u{2c7}"),
    ("dotlessi", "\u{131}"),
    ("OE", "\u{152}"),
    ("oe", "\u{153}"),
    ("Scaron", "\u{160}"),
    ("scaron", "\u{161}"),
    ("Zcaron", "\u{17d}"),
    ("zcaron", "\u{17e}"),
    ("Ydieresis", "\u{178}"),
    ("Lslash", "\u{141}"),
    ("lslash", "\u{142}"),
    ("fi", "fi"),
    ("fl", "fl"),
    ("ff", "ff"),
    ("ffi", "ffi"),
    ("ffl", "ffl"),
    ("nonbreakingspace", " "),
    ("softhyphen", "\u{ad}"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_encodings() {
        assert_eq!(Base::WinAnsi.char(b'A'), Some('A'));
        assert_eq!(Base::WinAnsi.char(0x93), Some('“'));
        assert_eq!(Base::WinAnsi.char(0x81), None);
        assert_eq!(Base::WinAnsi.char(0xe9), Some('é'));
        assert_eq!(Base::MacRoman.char(0x8e), Some('é'));
        assert_eq!(Base::MacRoman.char(0xff), Some('ˇ'));
        assert_eq!(Base::Standard.char(b'\''), Some('’'));
        assert_eq!(Base::Standard.char(0xae), Some('ﬁ'));
        assert_eq!(Base::Standard.char(0x10), None);
        assert_eq!(WIN_ANSI_80.chars().count(), 32);
        assert_eq!(MAC_ROMAN_80.chars().count(), 128);
        assert_eq!(PDF_DOC_80.chars().count(), 32);
    }

    #[test]
    fn glyph_names() {
        assert_eq!(glyph(b"a").as_deref(), Some("a"));
        assert_eq!(glyph(b"eacute").as_deref(), Some("é"));
        assert_eq!(glyph(b"quoteright").as_deref(), Some("’"));
        assert_eq!(glyph(b"fi").as_deref(), Some("fi"));
        assert_eq!(glyph(b"f_f_i").as_deref(), Some("ffi"));
        assert_eq!(glyph(b"a.sc").as_deref(), Some("a"));
        assert_eq!(glyph(b"uni00E9").as_deref(), Some("é"));
        assert_eq!(glyph(b"uniD83DDE00").as_deref(), Some("😀"));
        assert_eq!(glyph(b"u1F600").as_deref(), Some("😀"));
        assert_eq!(glyph(b"seven").as_deref(), Some("7"));
        assert_eq!(glyph(b"g123"), None);
        assert_eq!(glyph(b"uniZZZZ"), None);
        assert_eq!(glyph(b"uD800"), None);
        assert_eq!(glyph(b"\xff"), None);
    }

    #[test]
    fn text_strings() {
        assert_eq!(text_string(b"\xfe\xff\x00H\x00i"), "Hi");
        assert_eq!(text_string(b"\xff\xfeH\x00i\x00"), "Hi");
        assert_eq!(text_string("Café".as_bytes()), "Café");
        assert_eq!(text_string(b"Caf\xe9 \x8dx\x8e \x93"), "Café “x” ﬁ");
        assert_eq!(text_string(b"\xfe\xff\xd8"), "");
    }
}
