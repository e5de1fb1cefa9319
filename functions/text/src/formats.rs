//! Text, title and page count of each document kind.

use crate::Kind;

/// What a document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The text, paragraphs separated by blank lines.
    pub text: String,
    /// Title, when the format has one (or the first line/heading).
    pub title: Option<String>,
    /// Pages (PDF).
    pub pages: Option<u32>,
}

/// Why a document has no text to index.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The document holds no text (or only whitespace).
    #[error("the document has no text")]
    Empty,
    /// The file is damaged or not what its type says.
    #[error("the file is corrupt or not a valid document of its type: {0}")]
    Corrupt(String),
    /// Text that is not UTF-8.
    #[error("the text is not valid UTF-8: {0}")]
    BadEncoding(String),
}

impl ExtractError {
    /// The reason code documents fail with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Corrupt(_) => "corrupt",
            Self::BadEncoding(_) => "bad_encoding",
        }
    }
}

/// Extracts the text of a `kind` document.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let out = match kind {
        Kind::Text => {
            let text = utf8(bytes)?;
            Extracted {
                title: first_line(&text),
                text,
                pages: None,
            }
        }
        Kind::Markdown => markdown(&utf8(bytes)?),
        Kind::Html => html(&String::from_utf8_lossy(bytes)),
        Kind::Pdf => pdf(bytes)?,
    };
    if out.text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(out)
}

fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| ExtractError::BadEncoding(e.to_string()))?;
    Ok(text.replace("\r\n", "\n"))
}

fn clip_title(s: &str) -> Option<String> {
    let t: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    (!t.is_empty()).then_some(t)
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .and_then(clip_title)
}

fn markdown(source: &str) -> Extracted {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut text = String::new();
    let mut title = None;
    let mut heading: Option<String> = None;
    for event in Parser::new(source) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                if title.is_none() {
                    title = heading.take().and_then(|h| clip_title(&h));
                }
                heading = None;
                text.push_str("\n\n");
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
                text.push_str(&t);
            }
            Event::SoftBreak => text.push(' '),
            Event::HardBreak => text.push('\n'),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow,
            ) => text.push_str("\n\n"),
            Event::End(TagEnd::TableCell) => text.push(' '),
            _ => {}
        }
    }
    let text = tidy(&text);
    Extracted {
        title: title.or_else(|| first_line(&text)),
        text,
        pages: None,
    }
}

/// Elements whose content is not visible text.
const HIDDEN: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object",
];
/// Elements that break the text into paragraphs.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "nav",
    "aside",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "tr",
    "table",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "hr",
    "br",
    "form",
    "fieldset",
    "address",
    "body",
];

fn html(source: &str) -> Extracted {
    use html5gum::{DefaultEmitter, Token, Tokenizer};
    let mut emitter = DefaultEmitter::default();
    emitter.naively_switch_states(true);
    let mut text = String::new();
    let mut hidden: Vec<String> = Vec::new();
    let (mut title, mut in_title, mut h1, mut in_h1) = (String::new(), false, String::new(), false);
    for token in Tokenizer::new_with_emitter(source, emitter).flatten() {
        match token {
            Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                if name == "title" {
                    in_title = true;
                } else if name == "h1" {
                    in_h1 = true;
                }
                if HIDDEN.contains(&name.as_str()) && !tag.self_closing {
                    hidden.push(name.clone());
                }
                if BLOCKS.contains(&name.as_str()) {
                    text.push_str("\n\n");
                } else {
                    text.push(' ');
                }
            }
            Token::EndTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                if name == "title" {
                    in_title = false;
                } else if name == "h1" {
                    in_h1 = false;
                }
                if let Some(at) = hidden.iter().rposition(|h| *h == name) {
                    hidden.truncate(at);
                }
                if BLOCKS.contains(&name.as_str()) {
                    text.push_str("\n\n");
                }
            }
            Token::String(s) => {
                let s = String::from_utf8_lossy(&s);
                if in_title {
                    title.push_str(&s);
                }
                if hidden.is_empty() {
                    if in_h1 {
                        h1.push_str(&s);
                    }
                    text.push_str(&s);
                }
            }
            _ => {}
        }
    }
    Extracted {
        text: tidy(&text),
        title: clip_title(&title).or_else(|| clip_title(&h1)),
        pages: None,
    }
}

fn pdf(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| ExtractError::Corrupt(e.to_string()))?;
    let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
    if pages.is_empty() {
        return Err(ExtractError::Corrupt("the PDF has no pages".into()));
    }
    let mut text = String::new();
    for page in &pages {
        // A page whose text cannot be decoded is left out; if all fail, the document is corrupt.
        if let Ok(t) = doc.extract_text(&[*page]) {
            text.push_str(&t);
            text.push_str("\n\n");
        }
    }
    let title = doc
        .trailer
        .get(b"Info")
        .ok()
        .and_then(|info| match info {
            lopdf::Object::Reference(id) => doc.get_dictionary(*id).ok(),
            lopdf::Object::Dictionary(d) => Some(d),
            _ => None,
        })
        .and_then(|info| info.get(b"Title").ok())
        .and_then(|t| lopdf::decode_text_string(t).ok())
        .and_then(|t| clip_title(&t));
    Ok(Extracted {
        text: tidy(&text),
        title,
        pages: u32::try_from(pages.len()).ok(),
    })
}

/// Collapses runs of spaces within lines and runs of blank lines, trims the ends.
fn tidy(text: &str) -> String {
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
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pipeline")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn html_keeps_visible_text_only() {
        let page = "<!doctype html><html><head><title>Hot &amp; Rocks</title><style>p{color:red}</style></head>\
                    <body><script>if (a < b) { zebra(); }</script><h1>Magma</h1><p>Lava &lt;flows&gt;&nbsp;fast.</p>\
                    <noscript>enable js</noscript><p>Second</p></body></html>";
        let x = extract(Kind::Html, page.as_bytes()).unwrap();
        assert_eq!(x.title.as_deref(), Some("Hot & Rocks"));
        assert!(x.text.contains("Magma"), "{}", x.text);
        assert!(x.text.contains("Lava <flows>"), "{}", x.text);
        for hidden in ["zebra", "color", "enable js", "Hot & Rocks"] {
            assert!(
                !x.text.contains(hidden),
                "{hidden} leaked into {:?}",
                x.text
            );
        }
        assert!(x.text.contains("fast.\n\nSecond"), "{:?}", x.text);
    }

    #[test]
    fn markdown_drops_markup_and_urls() {
        let md = "# Bread\n\nMix *flour* and [water](https://example.com/water).\n\n- one\n- two\n\n```\ncode here\n```\n";
        let x = extract(Kind::Markdown, md.as_bytes()).unwrap();
        assert_eq!(x.title.as_deref(), Some("Bread"));
        assert!(x.text.contains("Mix flour and water."), "{}", x.text);
        assert!(!x.text.contains("example.com"), "{}", x.text);
        assert!(x.text.contains("code here"), "{}", x.text);
    }

    #[test]
    fn text_is_utf8_and_not_empty() {
        let x = extract(Kind::Text, "\u{feff}Title line\r\nbody é".as_bytes()).unwrap();
        assert_eq!(x.title.as_deref(), Some("Title line"));
        assert_eq!(x.text, "Title line\nbody é");
        assert_eq!(extract(Kind::Text, b" \n\t ").unwrap_err().code(), "empty");
        assert_eq!(
            extract(Kind::Text, &[0xff, 0xfe, 0x41]).unwrap_err().code(),
            "bad_encoding"
        );
        assert_eq!(
            extract(Kind::Html, b"<html><script>x</script></html>")
                .unwrap_err()
                .code(),
            "empty"
        );
    }

    #[test]
    fn pdf_pages_title_and_corruption() {
        let x = extract(Kind::Pdf, &fixture("glacier.pdf")).unwrap();
        assert_eq!(x.pages, Some(2));
        assert!(x.text.to_lowercase().contains("glacier"), "{}", x.text);
        assert!(x.text.contains("moraine"), "page 2 missing: {}", x.text);
        assert_eq!(x.title.as_deref(), Some("Glaciers and Ice Ages"));
        let corrupt = fixture("corrupt.pdf");
        assert_eq!(extract(Kind::Pdf, &corrupt).unwrap_err().code(), "corrupt");
        let whole = fixture("glacier.pdf");
        for cut in [10, whole.len() / 3, whole.len() / 2] {
            assert!(
                extract(Kind::Pdf, &whole[..cut]).is_err(),
                "truncated at {cut} still parsed"
            );
        }
        assert_eq!(
            extract(Kind::Pdf, b"not a pdf at all").unwrap_err().code(),
            "corrupt"
        );
    }

    #[test]
    fn fixtures_extract() {
        let txt = extract(Kind::Text, &fixture("lighthouse.txt")).unwrap();
        assert!(txt.text.contains("Fresnel"));
        let md = extract(Kind::Markdown, &fixture("sourdough.md")).unwrap();
        assert!(
            md.text.contains("starter") && !md.text.contains("https://"),
            "{}",
            md.text
        );
        let html = extract(Kind::Html, &fixture("volcano.html")).unwrap();
        assert!(
            html.text.contains("magma") && !html.text.contains("zebra"),
            "{}",
            html.text
        );
    }
}
