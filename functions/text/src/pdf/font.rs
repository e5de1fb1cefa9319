//! What a font's codes say: splitting a shown string into character codes, each
//! code's Unicode text (`/ToUnicode`, else the encoding) and advance width.

use hayro_cmap::{BfString, CMap};
use hayro_syntax::object::{Array, Dict, Name, Object, Stream};

use super::decode::{Streams, TooLarge};
use super::encoding::{self, Base};

/// Widths are in thousandths of the text size unless the font says otherwise (Type 3).
const DEFAULT_WIDTH: f64 = 500.0;
/// A font dictionary reading more glyph widths than this is treated as broken.
const MAX_WIDTH_ENTRIES: usize = 65_536;

/// A font, reduced to what text extraction needs.
pub(super) struct Font {
    /// Two-byte (or CMap-defined) codes of a composite (Type 0) font.
    composite: Option<Composite>,
    /// Text of each code of a simple font: encoding plus `/Differences`.
    simple: Vec<Option<String>>,
    /// `/ToUnicode`, which wins over everything else when it maps a code.
    to_unicode: Option<CMap>,
    /// Advance widths by code (simple) or CID ranges (composite), in glyph units.
    widths: Widths,
    /// Glyph units to text space: 1/1000, or a Type 3 font's `/FontMatrix`.
    scale: f64,
}

struct Composite {
    /// The `/Encoding` CMap; `None` for Identity-H/V (two bytes, CID = code).
    cmap: Option<CMap>,
    /// `Uni…-UCS2-…`/`UTF16` CMaps: the codes are UTF-16 already.
    unicode_codes: bool,
}

enum Widths {
    Simple {
        first: u32,
        widths: Vec<f64>,
        missing: f64,
    },
    Cid {
        ranges: Vec<(u32, u32, f64)>,
        default: f64,
    },
}

/// One character code of a shown string.
pub(super) struct Code {
    pub(super) code: u32,
    /// Bytes it took (word spacing applies to the one-byte code 32 only).
    pub(super) len: u8,
}

impl Font {
    /// Reads a font dictionary; anything missing or malformed falls back to defaults.
    pub(super) fn new(dict: &Dict<'_>, streams: &mut Streams) -> Result<Font, TooLarge> {
        let subtype = dict.get::<Name<'_>>(b"Subtype");
        let subtype = subtype.as_ref().map(|n| n.as_ref()).unwrap_or_default();
        let to_unicode = cmap(dict.get::<Stream<'_>>(b"ToUnicode"), streams)?;
        if subtype == b"Type0" {
            return Font::composite(dict, to_unicode, streams);
        }
        let scale = if subtype == b"Type3" {
            dict.get::<Array<'_>>(b"FontMatrix")
                .and_then(|m| m.iter::<f32>().next())
                .map(f64::from)
                .filter(|s| s.is_finite() && *s != 0.0)
                .unwrap_or(0.001)
        } else {
            0.001
        };
        Ok(Font {
            composite: None,
            simple: simple_encoding(dict, subtype),
            to_unicode,
            widths: simple_widths(dict),
            scale,
        })
    }

    fn composite(
        dict: &Dict<'_>,
        to_unicode: Option<CMap>,
        streams: &mut Streams,
    ) -> Result<Font, TooLarge> {
        let (cmap, unicode_codes) = match dict.get::<Object<'_>>(b"Encoding") {
            Some(Object::Name(name)) => {
                let n: &[u8] = name.as_ref();
                let unicode = contains(n, b"UCS2") || contains(n, b"UTF16");
                (None, unicode)
            }
            Some(Object::Stream(s)) => (cmap(Some(s), streams)?, false),
            _ => (None, false),
        };
        let descendant = dict
            .get::<Array<'_>>(b"DescendantFonts")
            .and_then(|a| a.iter::<Dict<'_>>().next())
            .unwrap_or_default();
        Ok(Font {
            composite: Some(Composite {
                cmap,
                unicode_codes,
            }),
            simple: Vec::new(),
            to_unicode,
            widths: cid_widths(&descendant),
            scale: 0.001,
        })
    }

    /// Splits a shown string into codes.
    pub(super) fn codes(&self, bytes: &[u8]) -> Vec<Code> {
        let Some(composite) = &self.composite else {
            return bytes
                .iter()
                .map(|&b| Code {
                    code: u32::from(b),
                    len: 1,
                })
                .collect();
        };
        let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = match &composite.cmap {
                Some(cmap) => (1..=4u8)
                    .find(|&n| {
                        usize::from(n) <= rest.len()
                            && cmap
                                .lookup_cid_code(be(&rest[..usize::from(n)]), n)
                                .is_some()
                    })
                    .unwrap_or(1),
                None => 2,
            };
            let take = usize::from(len).min(rest.len());
            out.push(Code {
                code: be(&rest[..take]),
                len,
            });
            rest = &rest[take..];
        }
        out
    }

    /// The text a code stands for (empty when unknown).
    pub(super) fn text(&self, code: &Code, out: &mut String) {
        if let Some(mapped) = self
            .to_unicode
            .as_ref()
            .and_then(|m| m.lookup_bf_string(code.code))
        {
            match mapped {
                BfString::Char(c) => push_visible(out, c),
                BfString::String(s) => s.chars().for_each(|c| push_visible(out, c)),
            }
            return;
        }
        match &self.composite {
            Some(c) if c.unicode_codes && code.len == 2 => {
                if let Some(ch) = u16::try_from(code.code)
                    .ok()
                    .and_then(|u| char::from_u32(u.into()))
                {
                    push_visible(out, ch);
                }
            }
            Some(_) => {}
            None => {
                if let Some(Some(s)) = usize::try_from(code.code)
                    .ok()
                    .and_then(|i| self.simple.get(i))
                {
                    s.chars().for_each(|c| push_visible(out, c));
                }
            }
        }
    }

    /// Advance of a code in text space units (before size and scaling).
    pub(super) fn width(&self, code: &Code) -> f64 {
        let w = match &self.widths {
            Widths::Simple {
                first,
                widths,
                missing,
            } => code
                .code
                .checked_sub(*first)
                .and_then(|i| widths.get(usize::try_from(i).ok()?))
                .copied()
                .unwrap_or(*missing),
            Widths::Cid { ranges, default } => {
                let cid = match self.composite.as_ref().and_then(|c| c.cmap.as_ref()) {
                    Some(cmap) => cmap.lookup_cid_code(code.code, code.len).unwrap_or(0),
                    None => code.code,
                };
                // Sorted by first CID; the last range starting at or before `cid`.
                let at = ranges.partition_point(|r| r.0 <= cid);
                at.checked_sub(1)
                    .and_then(|i| ranges.get(i))
                    .filter(|r| cid <= r.1)
                    .map_or(*default, |r| r.2)
            }
        };
        w * self.scale
    }
}

/// Keeps text and whitespace; drops control characters and U+FFFD noise.
/// A CMap stream, read; `None` when missing or unreadable.
fn cmap(stream: Option<Stream<'_>>, streams: &mut Streams) -> Result<Option<CMap>, TooLarge> {
    let Some(stream) = stream else {
        return Ok(None);
    };
    Ok(streams
        .decode(&stream)?
        .and_then(|d| CMap::parse(&d, |_| None)))
}

fn push_visible(out: &mut String, c: char) {
    if c == '\u{a0}' {
        out.push(' ');
    } else if (!c.is_control() || c.is_whitespace()) && c != '\u{fffd}' && c != '\u{ad}' {
        out.push(c);
    }
}

fn be(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The 256 codes of a simple font: base encoding, then `/Differences`.
fn simple_encoding(dict: &Dict<'_>, subtype: &[u8]) -> Vec<Option<String>> {
    let symbolic_default = if subtype == b"TrueType" {
        Base::WinAnsi
    } else {
        Base::Standard
    };
    let (base, differences) = match dict.get::<Object<'_>>(b"Encoding") {
        Some(Object::Name(n)) => (
            Base::from_name(n.as_ref()).unwrap_or(symbolic_default),
            None,
        ),
        Some(Object::Dict(d)) => (
            d.get::<Name<'_>>(b"BaseEncoding")
                .and_then(|n| Base::from_name(n.as_ref()))
                .unwrap_or(symbolic_default),
            d.get::<Array<'_>>(b"Differences"),
        ),
        _ => (symbolic_default, None),
    };
    let mut table: Vec<Option<String>> = (0..=255u8)
        .map(|b| base.char(b).map(String::from))
        .collect();
    if let Some(diffs) = differences {
        let mut at: Option<usize> = None;
        for item in diffs.iter::<Object<'_>>().take(MAX_WIDTH_ENTRIES) {
            match item {
                Object::Number(n) => at = usize::try_from(n.as_i64()).ok(),
                Object::Name(name) => {
                    if let Some(slot) = at.and_then(|i| table.get_mut(i)) {
                        *slot = encoding::glyph(name.as_ref());
                    }
                    at = at.map(|i| i.saturating_add(1));
                }
                _ => {}
            }
        }
    }
    table
}

fn simple_widths(dict: &Dict<'_>) -> Widths {
    let missing = dict
        .get::<Dict<'_>>(b"FontDescriptor")
        .and_then(|d| d.get::<f32>(b"MissingWidth"))
        .map(f64::from)
        .filter(|w| w.is_finite() && *w > 0.0)
        .unwrap_or(DEFAULT_WIDTH);
    let first = dict.get::<u32>(b"FirstChar").unwrap_or(0);
    let widths = dict
        .get::<Array<'_>>(b"Widths")
        .map(|a| {
            a.iter::<f32>()
                .take(MAX_WIDTH_ENTRIES)
                .map(|w| finite_or(f64::from(w), missing))
                .collect()
        })
        .unwrap_or_default();
    Widths::Simple {
        first,
        widths,
        missing,
    }
}

/// `/W` of a CIDFont: `c [w1 w2 …]` and `c_first c_last w` entries.
fn cid_widths(dict: &Dict<'_>) -> Widths {
    let default = dict
        .get::<f32>(b"DW")
        .map(f64::from)
        .map_or(1000.0, |w| finite_or(w, 1000.0));
    let mut ranges = Vec::new();
    if let Some(w) = dict.get::<Array<'_>>(b"W") {
        let items: Vec<Object<'_>> = w.iter::<Object<'_>>().take(MAX_WIDTH_ENTRIES).collect();
        let mut i = 0;
        while i < items.len() && ranges.len() < MAX_WIDTH_ENTRIES {
            let Some(first) = number(&items[i]).and_then(|n| u32::try_from(n as i64).ok()) else {
                i += 1;
                continue;
            };
            match items.get(i + 1) {
                Some(Object::Array(list)) => {
                    for (k, w) in list.iter::<f32>().take(MAX_WIDTH_ENTRIES).enumerate() {
                        let cid = first.saturating_add(u32::try_from(k).unwrap_or(u32::MAX));
                        ranges.push((cid, cid, finite_or(f64::from(w), default)));
                    }
                    i += 2;
                }
                Some(last) => {
                    let last = number(last).and_then(|n| u32::try_from(n as i64).ok());
                    let w = items.get(i + 2).and_then(number);
                    if let (Some(last), Some(w)) = (last, w) {
                        ranges.push((first, last, finite_or(w, default)));
                    }
                    i += 3;
                }
                None => break,
            }
        }
    }
    ranges.sort_by_key(|r| r.0);
    Widths::Cid { ranges, default }
}

fn number(o: &Object<'_>) -> Option<f64> {
    match o {
        Object::Number(n) => Some(n.as_f64()),
        _ => None,
    }
}

fn finite_or(w: f64, fallback: f64) -> f64 {
    if w.is_finite() { w } else { fallback }
}
