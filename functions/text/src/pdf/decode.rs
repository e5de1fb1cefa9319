//! Stream data under a byte budget per document, with a cache for streams read again
//! (a form drawn on every page, a CMap every font shares).
//!
//! `hayro-syntax` decodes filters without a cap on their output: one small flate
//! stream can inflate a thousandfold, and a chain of them multiplies. So the filters
//! that hostile files chain — `FlateDecode`, `ASCIIHexDecode`, `ASCII85Decode` — are
//! decoded here, stopping as soon as the document's budget is spent (`miniz_oxide`
//! inflates). Any other filter (LZW, run length, image filters) is left to
//! `hayro-syntax` and its output counted afterwards: such a stream can still grow by
//! its filters' ratio (LZW's is some thousands) before it is refused. Damaged flate
//! data, and predictors, also go to `hayro-syntax` (which reads on past damage, as
//! this crate always has), but only when the most its decoders can make of the
//! stream fits what is left of the budget.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use hayro_syntax::Filter;
use hayro_syntax::object::{Array, Dict, Object, ObjectIdentifier, Stream};
use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// The document decoded more than its budget allows.
#[derive(Debug)]
pub(super) struct TooLarge {
    /// The budget, in bytes.
    pub(super) limit: usize,
}

/// The streams of one document: what they may still decode, and those decoded.
pub(super) struct Streams {
    /// Decoded data by object, `None` for streams that cannot be decoded, so that a
    /// form drawn a hundred thousand times is decoded once.
    cache: HashMap<ObjectIdentifier, Option<Rc<[u8]>>>,
    /// Bytes the cache may still take; past it, streams are decoded at every use
    /// (and counted every time).
    cache_left: usize,
    /// Bytes the document may still decode.
    left: usize,
    limit: usize,
    /// Streams decoded (not taken from the cache), for tests that bound the work.
    pub(super) decodes: usize,
}

impl Streams {
    /// At most `limit` decoded bytes per document, `cache` of them kept for reuse.
    pub(super) fn new(limit: usize, cache: usize) -> Streams {
        Streams {
            cache: HashMap::new(),
            cache_left: cache,
            left: limit,
            limit,
            decodes: 0,
        }
    }

    /// A stream's data with its filters undone; `None` when that is impossible (an
    /// image filter, an external file).
    pub(super) fn decode(&mut self, stream: &Stream<'_>) -> Result<Option<Rc<[u8]>>, TooLarge> {
        let id = stream.dict().obj_id();
        if let Some(hit) = id.and_then(|id| self.cache.get(&id)) {
            return Ok(hit.clone());
        }
        self.decodes += 1;
        let data: Option<Rc<[u8]>> = self.decode_uncached(stream)?.map(Into::into);
        let size = data.as_ref().map_or(0, |d| d.len());
        if let Some(id) = id
            && size <= self.cache_left
        {
            self.cache_left -= size;
            self.cache.insert(id, data.clone());
        }
        Ok(data)
    }

    /// Whether the stream `id` is held decoded.
    pub(super) fn is_cached(&self, id: ObjectIdentifier) -> bool {
        self.cache.get(&id).is_some_and(Option::is_some)
    }

    /// Counts `bytes` more against the budget.
    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), TooLarge> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.left = 0;
                Err(self.too_large())
            }
        }
    }

    fn too_large(&self) -> TooLarge {
        TooLarge { limit: self.limit }
    }

    fn decode_uncached(&mut self, stream: &Stream<'_>) -> Result<Option<Vec<u8>>, TooLarge> {
        let dict = stream.dict();
        // Data in another file (`/F` a file specification), as `hayro-syntax` refuses.
        if matches!(
            dict.get::<Object<'_>>(b"F"),
            Some(Object::String(_) | Object::Dict(_))
        ) {
            return Ok(None);
        }
        let mut filters = stream.filters();
        if filters.first() == Some(&Filter::Crypt) {
            // Decrypted by `raw_data`.
            filters.remove(0);
        }
        let ours = filters.iter().all(|f| {
            matches!(
                f,
                Filter::FlateDecode | Filter::AsciiHexDecode | Filter::Ascii85Decode
            )
        });
        if !ours {
            return self.by_hayro(stream);
        }
        let mut data: Cow<'_, [u8]> = stream.raw_data();
        if filters.is_empty() {
            // The data is in the file, but a copy of it is held.
            self.charge(data.len())?;
        }
        // The most any decoder, however lenient, can make of the data.
        let most = filters
            .iter()
            .fold(data.len(), |n, f| n.saturating_mul(expansion(*f)))
            .saturating_add(1024);
        let mut damaged = false;
        for filter in filters {
            let out = match filter {
                Filter::FlateDecode => match inflate(&data, self.left) {
                    Inflated::Whole(out) => out,
                    Inflated::Damaged(out) => {
                        damaged = true;
                        out
                    }
                    Inflated::TooLarge => return Err(self.too_large()),
                },
                Filter::AsciiHexDecode => match ascii_hex(&data) {
                    Some(out) => out,
                    None => return Ok(None),
                },
                _ => match ascii_85(&data) {
                    Some(out) => out,
                    None => return Ok(None),
                },
            };
            self.charge(out.len())?;
            data = Cow::Owned(out);
        }
        let predictor = has_predictor(dict);
        if !(damaged || predictor) {
            return Ok(Some(data.into_owned()));
        }
        // A predictor (only images and cross-reference streams have a reason to use
        // one) is `hayro-syntax`'s to undo; and on damaged data its decoder guesses
        // on where this one stops. Both as before, when the most that can come out
        // fits the budget.
        if most <= self.left {
            return self.by_hayro(stream);
        }
        Ok((!predictor).then(|| data.into_owned()))
    }

    fn by_hayro(&mut self, stream: &Stream<'_>) -> Result<Option<Vec<u8>>, TooLarge> {
        let Ok(data) = stream.decoded() else {
            return Ok(None);
        };
        self.charge(data.len())?;
        Ok(Some(data.into_owned()))
    }
}

/// Whether the stream's decode parameters name a predictor other than none.
fn has_predictor(dict: &Dict<'_>) -> bool {
    let predicts =
        |d: &Dict<'_>| d.contains_key(b"Predictor") && d.get::<u8>(b"Predictor") != Some(1);
    ["DecodeParms", "DP"].iter().any(|key| {
        dict.get::<Dict<'_>>(key).is_some_and(|d| predicts(&d))
            || dict.get::<Array<'_>>(key).is_some_and(|a| {
                a.iter::<Object<'_>>()
                    .any(|o| matches!(o, Object::Dict(d) if predicts(&d)))
            })
    })
}

/// How many bytes a filter can make of one, at most (`hayro-syntax`'s lenient flate
/// decoder included: at least two bits for a copy of 258 bytes).
fn expansion(filter: Filter) -> usize {
    match filter {
        Filter::FlateDecode => 1032,
        Filter::Ascii85Decode => 4,
        _ => 1,
    }
}

/// What [`inflate`] made of its input.
enum Inflated {
    Whole(Vec<u8>),
    /// What came before the damage (or the end of truncated data).
    Damaged(Vec<u8>),
    /// More than the limit.
    TooLarge,
}

/// Inflates zlib or bare deflate data as `hayro-syntax` does: a valid zlib header is
/// skipped and the checksum not checked. At most `limit` bytes.
fn inflate(data: &[u8], limit: usize) -> Inflated {
    let zlib = data.len() >= 2
        && (data[0] & 0x0f) == 8
        && ((u16::from(data[0]) << 8) | u16::from(data[1])).is_multiple_of(31)
        && (data[1] & 0x20) == 0;
    let mut input = if zlib { &data[2..] } else { data };
    let cap = limit.saturating_add(1);
    let mut out = vec![0; input.len().saturating_mul(4).max(1024).min(cap)];
    let mut state = Box::<DecompressorOxide>::default();
    // The whole output stays in view: matches may reach back anywhere in it.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let mut at = 0;
    loop {
        let (status, read, wrote) = decompress(&mut state, input, &mut out, at, flags);
        at += wrote;
        input = input.get(read..).unwrap_or_default();
        if status != TINFLStatus::HasMoreOutput {
            out.truncate(at);
            return match status {
                _ if at > limit => Inflated::TooLarge,
                TINFLStatus::Done => Inflated::Whole(out),
                _ => Inflated::Damaged(out),
            };
        }
        if out.len() >= cap {
            return Inflated::TooLarge;
        }
        let grown = out.len().saturating_mul(2).max(1024).min(cap);
        out.resize(grown, 0);
    }
}

/// PDF white space.
fn is_space(b: u8) -> bool {
    matches!(b, b'\0' | b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// `ASCIIHexDecode`: hex digit pairs up to `>`, white space ignored, an odd last
/// digit as if followed by 0.
fn ascii_hex(data: &[u8]) -> Option<Vec<u8>> {
    let end = data.iter().position(|&b| b == b'>').unwrap_or(data.len());
    let mut out = Vec::with_capacity(end / 2);
    let mut high = None;
    for &b in data[..end].iter().filter(|&&b| !is_space(b)) {
        let digit = char::from(b).to_digit(16)? as u8;
        match high.take() {
            None => high = Some(digit),
            Some(h) => out.push(h << 4 | digit),
        }
    }
    if let Some(h) = high {
        out.push(h << 4);
    }
    Some(out)
}

/// `ASCII85Decode`: groups of five digits `!`–`u` make four bytes, `z` four zeros, a
/// short last group fewer; ends at `~` (or the end), white space ignored.
fn ascii_85(data: &[u8]) -> Option<Vec<u8>> {
    fn flush(group: &mut Vec<u8>, out: &mut Vec<u8>) -> Option<()> {
        if group.is_empty() {
            return Some(());
        }
        if group.len() == 1 {
            return None;
        }
        let bytes = group.len() - 1;
        let mut value: u32 = 0;
        for i in 0..5 {
            let digit = group.get(i).map_or(84, |&d| u32::from(d - b'!'));
            value = value.checked_mul(85)?.checked_add(digit)?;
        }
        out.extend_from_slice(&value.to_be_bytes()[..bytes]);
        group.clear();
        Some(())
    }
    let mut out = Vec::with_capacity(data.len() / 5 * 4);
    let mut group = Vec::with_capacity(5);
    for &b in data.iter().filter(|&&b| !is_space(b)) {
        match b {
            b'!'..=b'u' => {
                group.push(b);
                if group.len() == 5 {
                    flush(&mut group, &mut out)?;
                }
            }
            b'z' => {
                flush(&mut group, &mut out)?;
                out.extend_from_slice(&[0; 4]);
            }
            b'~' => break,
            _ => return None,
        }
    }
    flush(&mut group, &mut out)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(i: Inflated) -> Option<Vec<u8>> {
        match i {
            Inflated::Whole(out) => Some(out),
            _ => None,
        }
    }

    fn damaged(i: Inflated) -> Option<Vec<u8>> {
        match i {
            Inflated::Damaged(out) => Some(out),
            _ => None,
        }
    }

    #[test]
    fn inflates_within_the_limit_only() {
        let data = vec![7u8; 100_000];
        let zlib = miniz_oxide::deflate::compress_to_vec_zlib(&data, 6);
        assert_eq!(whole(inflate(&zlib, 100_000)), Some(data.clone()));
        assert!(matches!(inflate(&zlib, 99_999), Inflated::TooLarge));
        let raw = miniz_oxide::deflate::compress_to_vec(&data, 6);
        assert_eq!(whole(inflate(&raw, 1 << 20)), Some(data.clone()));
        // Truncated: what came before the cut.
        let cut = damaged(inflate(&zlib[..zlib.len() / 2], 1 << 20)).unwrap();
        assert!(cut.len() < data.len() && cut.iter().all(|&b| b == 7));
        assert_eq!(damaged(inflate(b"", 10)), Some(Vec::new()));
        assert_eq!(damaged(inflate(b"\xff\xff\xff", 10)), Some(Vec::new()));
    }

    #[test]
    fn ascii_filters() {
        assert_eq!(
            ascii_hex(b"AF3E 29\n01>ff").unwrap(),
            [0xaf, 0x3e, 0x29, 0x01]
        );
        assert_eq!(ascii_hex(b"7").unwrap(), [0x70]);
        assert_eq!(ascii_hex(b"xy"), None);
        assert_eq!(ascii_85(b"87cURD]i,\"Ebo80~>").unwrap(), b"Hello World!");
        assert_eq!(ascii_85(b"z 9jqo^~>").unwrap(), b"\0\0\0\0Man ");
        assert_eq!(
            ascii_85(b"9jqo^BlbD-BleB1DJ+*+F(f,q").unwrap(),
            b"Man is distinguished"
        );
        assert_eq!(ascii_85(b"9"), None);
        assert_eq!(ascii_85(b"s8W-!~>").unwrap(), [0xff, 0xff, 0xff, 0xff]);
        assert_eq!(ascii_85(b"uuuuu"), None);
        assert_eq!(ascii_85(b"9jq{"), None);
    }
}
