//! The extracted text of a document, why there may be none, and the helpers the
//! formats share (titles, whitespace).

use crate::{Kind, html, markdown, pdf};

/// Titles are cut to this many characters.
const TITLE_CHARS: usize = 200;

/// `Result` with [`ExtractError`].
pub type Result<T, E = ExtractError> = std::result::Result<T, E>;

/// What a document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The text to chunk and index; paragraphs (and PDF pages) separated by blank lines.
    pub text: String,
    /// Shown in search results: the format's own title, else its first heading or line.
    pub title: Option<String>,
    /// Page count of paged formats (PDF), for the document's record.
    pub pages: Option<u32>,
}

/// Why a document has no text to index.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The document holds no text, or only whitespace (a scanned PDF, an empty page).
    #[error("the document has no text to index")]
    Empty,
    /// The file is damaged, truncated, encrypted or not what its type says.
    #[error("the file is corrupt or not a valid document of its type: {0}")]
    Corrupt(String),
    /// A text format (plain text, Markdown) whose bytes are not UTF-8.
    #[error("the text is not valid UTF-8: {0}")]
    BadEncoding(String),
    /// Reading the document would take more than its budget: a PDF whose compressed
    /// streams inflate past the limit (a "zip bomb", or a huge document).
    #[error("the document is too large to extract: {0}")]
    TooLarge(String),
}

impl ExtractError {
    /// The reason code a document fails with (`empty`, `corrupt`, `bad_encoding`,
    /// `too_large`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Corrupt(_) => "corrupt",
            Self::BadEncoding(_) => "bad_encoding",
            Self::TooLarge(_) => "too_large",
        }
    }
}

/// Extracts the text, title and page count of a `kind` document. Never panics on
/// input: damage is [`ExtractError::Corrupt`].
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted> {
    let out = match kind {
        Kind::Text => {
            let text = utf8(bytes)?;
            Extracted {
                title: first_line(&text),
                text,
                pages: None,
            }
        }
        Kind::Markdown => markdown::markdown(&utf8(bytes)?),
        Kind::Html => html::html(&String::from_utf8_lossy(bytes)),
        Kind::Pdf => pdf::extract(bytes)?,
    };
    if out.text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(out)
}

/// UTF-8 without a byte order mark, with `\n` line ends.
fn utf8(bytes: &[u8]) -> Result<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| ExtractError::BadEncoding(e.to_string()))?;
    Ok(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// A title: whitespace collapsed, at most [`TITLE_CHARS`] characters, not empty.
pub(crate) fn clip_title(s: &str) -> Option<String> {
    let t: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(TITLE_CHARS)
        .collect();
    (!t.is_empty()).then_some(t)
}

/// The first non-blank line, as a title.
pub(crate) fn first_line(text: &str) -> Option<String> {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .and_then(clip_title)
}

/// Collapses runs of spaces within lines and runs of blank lines, trims the ends.
pub(crate) fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../../tests/fixtures/pipeline")
        .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn text_is_utf8_without_bom_or_crlf() {
        let x = extract(
            Kind::Text,
            "\u{feff}\r\n  Title line  \r\nbody é\r\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(x.title.as_deref(), Some("Title line"));
        assert_eq!(x.text, "\n  Title line  \nbody é\n");
        assert_eq!(x.pages, None);
        let long = "x".repeat(500);
        let x = extract(Kind::Text, long.as_bytes()).unwrap();
        assert_eq!(x.title.map(|t| t.chars().count()), Some(TITLE_CHARS));
    }

    #[test]
    fn error_codes() {
        let e = extract(Kind::Text, &[0xff, 0xfe, 0x41]).unwrap_err();
        assert_eq!(e.code(), "bad_encoding");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        assert_eq!(
            extract(Kind::Markdown, b"\xc3").unwrap_err().code(),
            "bad_encoding"
        );
        for kind in [Kind::Text, Kind::Markdown, Kind::Html] {
            assert_eq!(extract(kind, b" \n\t ").unwrap_err().code(), "empty");
            assert_eq!(extract(kind, b"").unwrap_err().code(), "empty");
        }
        let e = extract(Kind::Html, b"<html><script>x</script></html>").unwrap_err();
        assert_eq!(e.code(), "empty");
        let e = extract(Kind::Pdf, b"not a pdf at all").unwrap_err();
        assert_eq!(e.code(), "corrupt");
        assert!(e.to_string().contains("not a PDF"), "{e}");
    }

    #[test]
    fn tidy_collapses_whitespace() {
        assert_eq!(tidy("  a \t b \n\n\n\n c\n d  "), "a b\n\nc\nd");
        assert_eq!(clip_title(" \n "), None);
    }

    #[test]
    fn fixtures_extract() {
        let txt = extract(Kind::Text, &fixture("lighthouse.txt")).unwrap();
        assert!(txt.text.contains("Fresnel"), "{}", txt.text);
        assert!(txt.title.is_some());

        let md = extract(Kind::Markdown, &fixture("sourdough.md")).unwrap();
        assert!(md.text.contains("starter"), "{}", md.text);
        assert!(
            !md.text.contains("https://") && !md.text.contains("](") && !md.text.contains("```")
        );
        assert!(
            md.title.as_deref().is_some_and(|t| t.contains("Sourdough")),
            "{:?}",
            md.title
        );

        let html = extract(Kind::Html, &fixture("volcano.html")).unwrap();
        assert!(html.text.contains("magma"), "{}", html.text);
        assert!(!html.text.contains("zebra"), "{}", html.text);
        assert!(!html.text.contains("font-family"), "{}", html.text);
        assert!(!html.text.contains("JavaScript"), "{}", html.text);
        assert!(html.text.contains("eruptions & warn"), "{}", html.text);
        assert_eq!(html.title.as_deref(), Some("Volcanoes and Magma"));

        let pdf = extract(Kind::Pdf, &fixture("glacier.pdf")).unwrap();
        assert_eq!(pdf.pages, Some(2));
        assert!(pdf.text.contains("glacier"), "{}", pdf.text);
        assert!(pdf.text.contains("moraine"), "page 2 missing: {}", pdf.text);
        assert!(
            pdf.text.contains("\n\n"),
            "pages not separated: {}",
            pdf.text
        );
        assert_eq!(pdf.title.as_deref(), Some("Glaciers and Ice Ages"));

        let corrupt = extract(Kind::Pdf, &fixture("corrupt.pdf")).unwrap_err();
        assert_eq!(corrupt.code(), "corrupt");

        for (name, kind) in [
            ("lighthouse.txt", Kind::Text),
            ("sourdough.md", Kind::Markdown),
            ("volcano.html", Kind::Html),
            ("glacier.pdf", Kind::Pdf),
        ] {
            assert_eq!(Kind::from_name(name), Some(kind));
            let sniffed = Kind::sniff(&fixture(name));
            let expect = if kind == Kind::Markdown {
                Kind::Text
            } else {
                kind
            };
            assert_eq!(sniffed, Some(expect), "{name}");
        }
    }
}
